"""
Call records, reports and mail (DESIGN.md, C{records/}):

    - L{record}: L{CallRecord}, one per call attempt, made from a
      L{aetasip.calls.call.Call};
    - L{cdr}: L{CDRService}, the call observer that writes them, through a
      bounded queue, to an L{aetasip.interfaces.ICallRecordSink};
    - L{sink}: the SQL store as that sink;
    - L{periods}: calendar quarters and UTC periods;
    - L{csvfiles}: the CSV of C{aetasip-admin cdr export} and of the
      quarterly call logs.
"""
