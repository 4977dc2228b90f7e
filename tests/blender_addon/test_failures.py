"""A missing backend, a failing backend and a cancelled job leave the scene exactly as it was,
with one clear message; the modal operator's steps (timer ticks, Esc) are driven directly."""

from __future__ import annotations

from pathlib import Path

from .conftest import run_blender

FAILURES = r'''
from collections import namedtuple
enable_addon()
bpy.ops.object.select_all(action="SELECT")
bpy.ops.object.delete()
bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2, calc_uvs=False)
obj = bpy.context.active_object
obj.name = "Target"
obj.data.materials.append(bpy.data.materials.new("Original"))
obj.modifiers.new("Bevel", "BEVEL")
scene = bpy.context.scene
tex = scene.nca3d_texture
set_model(tex, ARGS["mesh_model"])
tex.size = 64
tex.steps = 4
tex.scale = 0.2
vol = scene.nca3d_volume
set_model(vol, ARGS["volume_model"])
vol.res = 16
vol.lattice = 8
vol.steps = 2
prefs = bpy.context.preferences.addons[MODULE].preferences
base = snapshot()
tmp = __import__("tempfile").gettempdir()
work_before = sorted(p for p in os.listdir(tmp) if p.startswith("nca3d-"))


def case(name, op):
    t0 = time.time()
    run = call(op)
    RESULT[name] = {"run": run, "same": snapshot() == base, "status": status(), "seconds": time.time() - t0,
                    "busy": addon().runner.busy()}


# A backend Python that does not exist; none to auto-detect.
prefs.python_path = os.path.join(OUT, "no_such_python")
case("missing_python", bpy.ops.nca3d.texture_mesh)
prefs.python_path = ""
os.environ["PATH"] = os.path.join(OUT, "empty_path")
addon().prefs.reset()
case("nothing_detected", bpy.ops.nca3d.add_volume)
# A Python that exists but has no nca3d: the backend cannot start.
prefs.python_path = sys.executable
case("python_without_nca3d", bpy.ops.nca3d.texture_mesh)
prefs.python_path = ARGS["python"]

# The backend fails: a file that is no model, and a volume model given to the texture... and vice versa.
bad = os.path.join(OUT, "bad.nca3d")
with open(bad, "wb") as handle:
    handle.write(b"this is not a model" * 10)
set_model(tex, bad)
case("bad_model", bpy.ops.nca3d.texture_mesh)
set_model(tex, ARGS["mesh_model"])
set_model(vol, ARGS["mesh_model"])
case("wrong_domain", bpy.ops.nca3d.add_volume)
set_model(vol, ARGS["volume_model"])
set_model(tex, os.path.join(OUT, "missing.nca3d"))
case("missing_model_file", bpy.ops.nca3d.texture_mesh)
set_model(tex, ARGS["mesh_model"])

# Cancel while the (synchronous) operator runs: request_cancel() from another thread.
runner = addon().runner
pids = []
timer = threading.Timer(1.0, lambda: (pids.append(runner.active_job().pid), runner.request_cancel()))
timer.start()
case("cancel_sync", bpy.ops.nca3d.texture_mesh)
timer.join()
RESULT["cancel_sync"]["pid_alive"] = os.path.exists(f"/proc/{pids[0]}") if pids else None

# The modal path: the operator's own modal() fed with timer ticks, then Esc.
Event = namedtuple("Event", "type value")  # what bpy.types.Event offers that modal() reads
TICK, ESC, MOVE = Event("TIMER", "NOTHING"), Event("ESC", "PRESS"), Event("MOUSEMOVE", "NOTHING")
texture_op = addon().ops_texture.NCA3D_OT_texture_mesh


class Driver(runner.BackendOperator):
    """The texture operator's steps, driven without a window (modal handlers need one)."""

    model = ""  # the operator's `model` argument, left empty: the panel's choice

    def __init__(self):
        self.reports = []

    def make_task(self, context):
        return texture_op.make_task(self, context)

    def report(self, level, message):
        self.reports.append([sorted(level), message])


def drive(cancel):
    driver = Driver()
    started = driver._start(bpy.context)
    job = driver._job
    workdir = driver._task.workdir
    results = [sorted(driver.modal(bpy.context, MOVE))]
    deadline = time.time() + 120
    result = {"PASS_THROUGH"}
    while result == {"PASS_THROUGH"} and time.time() < deadline:
        time.sleep(0.05)
        if cancel and job.stage not in ("start",):
            result = driver.modal(bpy.context, ESC)
        else:
            result = driver.modal(bpy.context, TICK)
    info = bpy.context.window_manager.nca3d_job
    return {"started": started, "first": results[0], "result": sorted(result), "reports": driver.reports,
            "pid_alive": os.path.exists(f"/proc/{job.pid}"), "stage_seen": job.stage, "state": job.state,
            "workdir_left": os.path.exists(workdir), "same": snapshot() == base, "running": info.running,
            "busy": runner.busy()}


RESULT["modal_cancel"] = drive(cancel=True)
RESULT["modal_run"] = drive(cancel=False)
RESULT["modal_run"]["material"] = obj.active_material.name
RESULT["modal_run"]["uv"] = [u.name for u in obj.data.uv_layers]
# Loading a file while a job runs stops the backend and frees the add-on for the next job.
driver = Driver()
driver._start(bpy.context)
job, workdir = driver._job, driver._task.workdir
bpy.ops.wm.read_homefile(use_empty=True)
RESULT["file_load"] = {"state": job.state, "alive": os.path.exists(f"/proc/{job.pid}"),
                       "workdir": os.path.exists(workdir), "busy": runner.busy()}
RESULT["work_left"] = sorted(set(p for p in os.listdir(tmp) if p.startswith("nca3d-")) - set(work_before))
'''


def test_failures_change_nothing(tmp_path: Path, tiny_models):
    result = run_blender(FAILURES, tmp_path, mesh_model=tiny_models["mesh"], volume_model=tiny_models["volume"])
    expected = {
        "missing_python": "no_such_python' does not exist",
        "nothing_detected": "no Python with nca3d found",
        "python_without_nca3d": "has no nca3d installed",
        "bad_model": "bad.nca3d",
        "wrong_domain": "volume",
        "missing_model_file": "missing.nca3d' does not exist",
    }
    for name, words in expected.items():
        case = result[name]
        assert case["run"][0] is None, (name, case)
        message = case["run"][1]
        assert message.startswith("Error: ") and words in message, (name, message)
        assert "\n" not in message.strip() and "Traceback" not in message, (name, message)
        assert case["same"], name
        assert not case["busy"] and not case["status"]["running"], name
        assert case["status"]["last_level"] == "ERROR" and case["status"]["last_message"] in message, name
    cancel = result["cancel_sync"]
    assert cancel["run"] == [["CANCELLED"], None] and cancel["same"], cancel
    assert cancel["status"]["last_level"] == "WARNING" and "cancelled" in cancel["status"]["last_message"]
    assert cancel["pid_alive"] is False and cancel["seconds"] < 30

    modal = result["modal_cancel"]
    assert modal["started"] and modal["first"] == ["PASS_THROUGH"]
    assert modal["result"] == ["CANCELLED"] and modal["state"] == "CANCELLED" and modal["stage_seen"] != "start"
    assert modal["reports"] == [[["WARNING"], "NCA texture: cancelled; nothing was changed"]]
    assert not modal["pid_alive"] and not modal["workdir_left"] and modal["same"]
    assert not modal["running"] and not modal["busy"]

    run = result["modal_run"]
    assert run["result"] == ["FINISHED"] and run["reports"][0][0] == ["INFO"], run
    assert not run["same"] and run["material"] == "NCA tiny_mesh" and run["uv"] == ["UVMap"]
    assert not run["workdir_left"] and not run["running"] and not run["busy"]
    assert result["file_load"] == {"state": "CANCELLED", "alive": False, "workdir": False, "busy": False}
    assert result["work_left"] == []
