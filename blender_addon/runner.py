"""Operators that run one backend job: modal with a timer in the UI, synchronous in scripts.

`BackendOperator` is mixed into a bpy Operator whose `make_task(context)` reads the scene and
returns a `Task` (the backend command line, a temp folder, and `apply`). The task's `apply` is
the only code that changes the scene, and it runs after the backend succeeded, inside the
operator's own modal/execute call, so one undo step covers everything. A failed, cancelled or
unstartable job changes nothing.

* `invoke` (buttons, F3): starts the backend and a window timer; `modal` polls the job on each
  timer tick (never blocking: the job's output is read by threads), draws progress, and
  cancels on Esc or the panel's Cancel button.
* `execute` (scripts, `blender --background`): the same steps in a loop; `request_cancel()`
  (thread-safe) stops it.
"""

from __future__ import annotations

import shutil
import threading

import bpy

from . import backend

_CANCEL = threading.Event()
_ACTIVE: dict = {"job": None, "task": None, "label": ""}
TIMER_INTERVAL = 0.1


class UserError(Exception):
    """Bad input found before the backend runs, or a result that cannot be applied; one line."""


def busy() -> bool:
    """True while a backend job runs (one at a time)."""
    job = _ACTIVE["job"]
    return job is not None and job.state == backend.RUNNING


def active_job():
    return _ACTIVE["job"]


def request_cancel() -> None:
    """Ask the running job to stop (safe from any thread); the operator kills the backend."""
    _CANCEL.set()


def cancel_requested() -> bool:
    return _CANCEL.is_set()


def kill_active() -> None:
    """Kill a running backend at once and drop its temp files (file load, add-on unregister): its
    operator may never get another event to finish on."""
    job, task = _ACTIVE["job"], _ACTIVE["task"]
    if job is not None:
        job.cancel()
    if task is not None:
        task.cleanup()
    _ACTIVE.update(job=None, task=None, label="")


class Task:
    """One backend run: argv, a temp folder removed afterwards, and how to apply the result."""

    label = "NCA"

    def __init__(self, argv: list[str], workdir: str | None = None, json_progress: bool = True):
        self.argv = argv
        self.workdir = workdir
        self.json_progress = json_progress

    def apply(self, context, job) -> str:
        """Change the scene from the finished job's files; returns the INFO message."""
        return f"{self.label}: done"

    def cleanup(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def status(context):
    wm = context.window_manager if context is not None else bpy.context.window_manager
    return getattr(wm, "nca3d_job", None)


def redraw_ui() -> None:
    """Redraw the areas that show the add-on's panels."""
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PROPERTIES", "PREFERENCES"}:
                area.tag_redraw()


class BackendOperator:
    """Mixin for bpy.types.Operator; subclasses define make_task(context) -> Task."""

    _job = None
    _task = None
    _timer = None

    def make_task(self, context) -> Task:
        raise NotImplementedError

    @classmethod
    def poll(cls, context):
        if busy():
            cls.poll_message_set("An NCA job is running: wait for it or cancel it")
            return False
        return cls.poll_more(context)

    @classmethod
    def poll_more(cls, context) -> bool:
        return True

    # ---------------------------------------------------------------- the two ways of running

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        self._job.wait(should_cancel=_CANCEL.is_set, on_progress=lambda job: self._show(context, job))
        return self._finish(context)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_INTERVAL, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            request_cancel()
            return self.step(context)  # Esc is ours while the job runs
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        result = self.step(context)
        # Timer events may belong to other tools too: let them through while the job runs.
        return {"PASS_THROUGH"} if result == {"RUNNING_MODAL"} else result

    def step(self, context):
        """One poll of the job (modal timer tick); FINISHED/CANCELLED once it ended."""
        job = self._job
        if _CANCEL.is_set():
            job.cancel()
        if job.poll() == backend.RUNNING:
            self._show(context, job)
            return {"RUNNING_MODAL"}
        return self._finish(context)

    def cancel(self, context):
        """Blender ends the modal operator (file loaded, window closed): stop the backend."""
        if self._job is not None:
            self._job.cancel()
        if self._task is not None:
            self._task.cleanup()
        self._release(context, "cancelled")

    # ---------------------------------------------------------------- shared steps

    def _start(self, context) -> bool:
        if busy():
            self.report({"ERROR"}, "An NCA job is already running: wait for it or cancel it")
            return False
        try:
            task = self.make_task(context)
        except UserError as exc:
            self.report({"ERROR"}, str(exc))
            self._remember(context, str(exc), "ERROR")
            return False
        _CANCEL.clear()
        self._task = task
        self._job = backend.Job(task.argv, json_progress=task.json_progress).start()
        _ACTIVE.update(job=self._job, task=task, label=task.label)
        info = status(context)
        if info is not None:
            info.running = True
            info.label = task.label
            info.stage, info.message, info.fraction = "start", "starting the backend", 0.0
        if bpy.app.background:
            print(f"{task.label}: {' '.join(task.argv)}", flush=True)
        return True

    def _show(self, context, job) -> None:
        info = status(context)
        if info is None:
            return
        changed = (info.stage, info.message, round(info.fraction, 3)) != (job.stage, job.message,
                                                                           round(job.fraction, 3))
        if not changed:
            return
        if bpy.app.background and info.stage != job.stage:
            print(f"{self._task.label}: {job.stage} {job.message}", flush=True)
        info.stage, info.message, info.fraction = job.stage, job.message, job.fraction
        if not bpy.app.background:
            context.window_manager.progress_update(int(job.fraction * 100))
            redraw_ui()

    def _finish(self, context):
        job, task = self._job, self._task
        result = {"CANCELLED"}
        try:
            if job.state == backend.DONE:
                try:
                    message = task.apply(context, job)
                except UserError as exc:
                    message, level = f"{task.label}: {exc}", "ERROR"
                except Exception as exc:  # noqa: BLE001 - reported, never half-applied
                    message, level = f"{task.label}: could not use the backend's result ({exc})", "ERROR"
                else:
                    level, result = "INFO", {"FINISHED"}
            elif job.state == backend.CANCELLED:
                message, level = f"{task.label}: cancelled; nothing was changed", "WARNING"
            else:
                message, level = f"{task.label} failed: {job.error}", "ERROR"
            self.report({level}, message)
            self._remember(context, message, level)
        finally:
            task.cleanup()
            self._release(context, "done" if result == {"FINISHED"} else "stopped")
        return result

    def _release(self, context, stage: str) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
            context.window_manager.progress_end()
        if _ACTIVE["job"] is self._job:
            _ACTIVE.update(job=None, task=None, label="")
        _CANCEL.clear()
        info = status(context)
        if info is not None:
            info.running = False
            info.stage = stage
        if not bpy.app.background:
            redraw_ui()

    @staticmethod
    def _remember(context, message: str, level: str) -> None:
        info = status(context)
        if info is not None:
            info.last_message, info.last_level = message, level
