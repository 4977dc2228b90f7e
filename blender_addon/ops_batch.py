"""Texture All Selected Meshes: one `nca3d batch` run (Ray, all cores) textures every selected mesh
with the panel's settings; each finished mesh gets its material as Texture Selected Mesh would
give it, and a mesh whose job failed is named with its error."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import bpy

from . import backend, config, library, mesh_io, ops_texture, runner

BATCH_EXIT_SOME_FAILED = 1  # nca3d batch: the batch ran to its end, some job failed


def batch_entry(argv: list[str], job: str) -> dict:
    """A `nca3d batch` JSONL entry from a `texture` command line (ops_texture.texture_argv): its
    options as keys, --out and --progress left to the batch."""
    start = argv.index("texture")
    entry = {"command": "texture", "job": job, "mesh": argv[start + 1]}
    rest = argv[start + 2:]
    index = 0
    while index < len(rest):
        key = rest[index][2:].replace("-", "_")
        takes_value = index + 1 < len(rest) and not rest[index + 1].startswith("--")
        if key not in ("out", "progress"):
            entry[key] = rest[index + 1] if takes_value else True
        index += 2 if takes_value else 1
    return entry


def manifest_states(path: str) -> dict[str, dict]:
    """The last record of each job in a batch.jsonl (a torn line is skipped)."""
    records = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and "job" in record:
                    records[record["job"]] = record
    except OSError:
        pass
    return records


class BatchItem(ops_texture.TextureTask):
    """One mesh of the batch: its files are in the batch's job folder."""

    def __init__(self, argv, workdir, obj_name, exported, settings_snapshot, model_label, out):
        super().__init__(argv, workdir, obj_name, exported, settings_snapshot, model_label)
        self._out = out

    @property
    def out(self) -> str:
        return self._out

    def cleanup(self) -> None:  # the batch's own folder holds it
        pass


class BatchTask(runner.Task):
    label = "NCA batch"

    def __init__(self, argv, workdir, items: dict[str, BatchItem]):
        super().__init__(argv, workdir)
        self.items = items  # job name -> item

    def apply(self, context, job) -> str:
        records = manifest_states(os.path.join(self.workdir, "out", "batch.jsonl"))
        done, failed = [], []
        for name, item in self.items.items():
            record = records.get(name, {})
            if record.get("state") != "done":
                failed.append(f"'{item.obj_name}': {record.get('error') or record.get('state', 'not run')}")
                continue
            try:
                item.apply(context, job)
                done.append(item.obj_name)
            except runner.UserError as exc:
                failed.append(f"'{item.obj_name}': {exc}")
        if not done:
            raise runner.UserError("no mesh was textured; " + "; ".join(failed))
        message = f"NCA batch: textured {len(done)} of {len(self.items)} meshes"
        return message + ("; failed " + "; ".join(failed) if failed else "")


class NCA3D_OT_texture_batch(runner.BackendOperator, bpy.types.Operator):
    """Texture every selected mesh with the chosen NCA model in one batch (Ray, all cores)"""

    bl_idname = "nca3d.texture_batch"
    bl_label = "NCA: Texture All Selected Meshes"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 - the bpy convention

    model: bpy.props.StringProperty(
        name="Model", options={"SKIP_SAVE"},
        description="For scripts: a bundled model's name or a .nca3d file path (empty: the panel's choice)")

    @classmethod
    def poll_more(cls, context):
        if not any(obj.type == "MESH" for obj in context.selected_objects):
            cls.poll_message_set("Select one or more mesh objects")
            return False
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        return True

    def _finish(self, context):
        job = self._job
        if job is not None and job.state == backend.FAILED and job.returncode == BATCH_EXIT_SOME_FAILED and job.files:
            job.state = backend.DONE  # the batch ran to its end: apply the meshes that were textured
        return super()._finish(context)

    def make_task(self, context):
        objects = sorted((obj for obj in context.selected_objects if obj.type == "MESH"), key=lambda o: o.name)
        if not objects:
            raise runner.UserError("select one or more mesh objects to texture")
        settings = context.scene.nca3d_texture
        model, snapshot = ops_texture.bake_request(context, settings, self.model)
        python = config.resolve_python(context)
        workdir = tempfile.mkdtemp(prefix="nca3d-batch-")
        out = os.path.join(workdir, "out")
        items, entries = {}, []
        try:
            for index, obj in enumerate(objects, 1):
                name = f"{index:04d}"
                item_dir = os.path.join(workdir, "meshes", name)
                os.makedirs(item_dir)
                mesh_path = os.path.join(item_dir, "mesh.obj")
                scale = library.texture_spacing(context, obj, settings)
                exported = mesh_io.export_for_texture(context, obj, mesh_path,
                                                      margin=max(4, settings.size // 128) / settings.size)
                argv = ops_texture.texture_argv(python, mesh_path, model, out, settings, scale, config.device(context))
                entries.append(batch_entry(argv, name))
                items[name] = BatchItem(argv, item_dir, obj.name, exported, snapshot, library.model_label(settings),
                                        os.path.join(out, name))
            jobs = os.path.join(workdir, "jobs.jsonl")
            with open(jobs, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(entry) + "\n" for entry in entries)
        except mesh_io.MeshError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise runner.UserError(str(exc)) from None
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        argv = [python, "-m", "nca3d", "batch", jobs, "--out", out, "--progress", "json"]
        return BatchTask(argv, workdir, items)


classes = (NCA3D_OT_texture_batch,)
