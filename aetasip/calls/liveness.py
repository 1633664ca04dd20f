"""
Dead calls end by themselves (a codec lost power: no BYE ever comes).

Every answered call is probed: an in-dialog OPTIONS to both legs every
C{calls.probe_interval} seconds. A leg that answers 408 or 481, or has not
answered its probe by the next one (or whose transaction times out), is
gone: the call is released (BYE to both legs, end cause C{dead dialog}).
RFC 4028 session timers are honoured when the agents ask for them: a
session not refreshed within its interval is released the same way. An
optional maximum duration releases long calls (off by default: broadcast
links run for days). In a cluster only the active server probes
(L{Liveness.probing}): a standby's probes would leave from the floating
address and their answers reach the active server, not it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from aetasip.calls import sessiontimer
from aetasip.calls.call import Call, EndCause
from aetasip.calls.dialog import CALLEE, CALLER, TERMINATED, Dialog
from aetasip.sip.message import Response
from aetasip.sip.timers import FixedTimers

if TYPE_CHECKING:
    from aetasip.calls.proxy import CallSettings, Proxy


class Watch:
    """
    What is watched of one dialog. Its probe and duration timers are in
    the L{FixedTimers} of its L{Liveness} (one reactor call for all
    calls); a forgotten watch lets go of its dialog, and ignores its
    timers when they come.
    """

    __slots__ = ("dialog", "liveness", "outstanding", "probeAt", "session")

    def __init__(self, liveness: Liveness, dialog: Dialog) -> None:
        self.liveness = liveness
        self.dialog: Dialog | None = dialog
        self.probeAt: float | None = None
        self.session: IDelayedCall | None = None
        self.outstanding = {CALLER: False, CALLEE: False}

    def cancel(self) -> None:
        self.dialog = None
        self.probeAt = None
        if self.session is not None and self.session.active():
            self.session.cancel()
        self.session = None

    def probeDue(self, deadline: float) -> None:
        if deadline == self.probeAt and self.dialog is not None:
            self.liveness._probe(self)

    def durationDue(self, deadline: float) -> None:
        if self.dialog is not None:
            self.liveness._release(self, EndCause.DURATION_LIMIT, "longest call reached")


class Liveness:
    """Watches the answered calls' dialogs (see the module docstring)."""

    def __init__(self, proxy: Proxy, clock: IReactorTime, settings: CallSettings) -> None:
        self.proxy = proxy
        self.clock = clock
        self.settings = settings
        self.timers = FixedTimers(clock)
        self._watches: dict[Dialog, Watch] = {}
        self._probing = True
        # Counts the changes of probing: an answer to a probe sent before
        # the last one is not judged (it may have gone to another server).
        self._epoch = 0

    @property
    def probing(self) -> bool:
        """Whether probes are sent; when not, calls are not judged either."""
        return self._probing

    @probing.setter
    def probing(self, enabled: bool) -> None:
        if enabled != self._probing:
            self._probing = enabled
            self._epoch += 1
            for watch in self._watches.values():
                watch.outstanding[CALLER] = watch.outstanding[CALLEE] = False

    def __len__(self) -> int:
        return len(self._watches)

    def watch(self, dialog: Dialog, answer: Response | None) -> None:
        """Watch the dialog of an answered call (C{answer}: its 2xx, for the session timer)."""
        if dialog.call is None or dialog in self._watches:
            return
        watch = self._watches[dialog] = Watch(self, dialog)
        if self.settings.probeInterval:
            watch.probeAt = self.timers.after(self.settings.probeInterval, watch, "probeDue")
        if self.settings.maxDuration:
            self.timers.after(self.settings.maxDuration, watch, "durationDue")
        if answer is not None:
            self.refreshed(dialog, answer)

    def refreshed(self, dialog: Dialog, answer: Response) -> None:
        """A 2xx of an INVITE or UPDATE: the session interval starts again."""
        watch = self._watches.get(dialog)
        if watch is None:
            return
        interval = sessiontimer.interval(answer)
        if watch.session is not None and watch.session.active():
            watch.session.cancel()
        watch.session = None
        if interval:
            watch.session = self.clock.callLater(
                interval, self._release, watch, EndCause.DEAD_DIALOG, "session timer expired"
            )

    def forget(self, dialog: Dialog) -> None:
        watch = self._watches.pop(dialog, None)
        if watch is not None:
            watch.cancel()

    def forgetCall(self, call: Call) -> None:
        for dialog in call.dialogs:
            self.forget(dialog)

    def stop(self) -> None:
        self.timers.stop()
        watches, self._watches = self._watches, {}
        for watch in watches.values():
            watch.cancel()

    def _probe(self, watch: Watch) -> None:
        dialog = watch.dialog
        assert dialog is not None
        if dialog.state == TERMINATED:
            return
        for side in (CALLER, CALLEE):
            if watch.outstanding[side] and self.probing:
                self._release(watch, EndCause.DEAD_DIALOG, f"the {side} stopped answering")
                return
            watch.outstanding[side] = False
        watch.probeAt = self.timers.after(self.settings.probeInterval, watch, "probeDue")
        if not self.probing:
            return
        for side in (CALLER, CALLEE):
            watch.outstanding[side] = True
            self.proxy.router.requestInDialog(dialog, side, "OPTIONS", self._answered(watch, side))

    def _answered(self, watch: Watch, side: str) -> Any:
        epoch = self._epoch

        def answered(code: int | None) -> None:
            if watch.dialog is None or epoch != self._epoch:
                return
            if code is None or code in (408, 481):
                reason = "no answer" if code is None else str(code)
                self._release(watch, EndCause.DEAD_DIALOG, f"the {side} answered a probe with {reason}")
            else:
                watch.outstanding[side] = False

        return answered

    def _release(self, watch: Watch, cause: str, detail: str) -> None:
        if watch.dialog is None:
            return
        call = watch.dialog.call
        self.forget(watch.dialog)
        if call is not None and not call.ended:
            self.proxy.release(call, cause, detail)
