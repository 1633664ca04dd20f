"""
The test line (guide 4.2): numbers answered inside the service, one
streaming an audio programme (15000), one returning the caller's own
audio (the echo line). See L{aetasip.testline.service}.
"""
