"""
Calls: the proxy as a package (DESIGN.md, "Calls").

  - L{aetasip.calls.call}: L{Call} objects, their states, end causes and
    observers;
  - L{aetasip.calls.dialog}: the dialogs the proxy set up, and their table;
  - L{aetasip.calls.token}: the signed dialog tokens of Record-Route;
  - L{aetasip.calls.proxy}: the proxy: authentication, routing, forking;
  - L{aetasip.calls.context} and L{aetasip.calls.hunting}: forking and
    hunting series;
  - L{aetasip.calls.indialog}: in-dialog requests, ACKs, stray 2xx, and
    requests in a dialog's name;
  - L{aetasip.calls.media}: the media hook (SDP offers and answers);
  - L{aetasip.calls.liveness} and L{aetasip.calls.sessiontimer}: dead
    calls, session timers, the longest call;
  - L{aetasip.calls.settings}: the C{calls} configuration section.
"""
