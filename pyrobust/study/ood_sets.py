"""The study's natural-shift OOD sets: image folders and ``.npz`` files labelled with the ID classes.

A folder holds one sub-folder per class; an ``.npz`` holds ``images`` (any layout
:class:`pyrobust.data.ArrayDataset` reads), ``labels`` and optionally ``classes`` (the name of each
label; without it a label is an ID class index). Classes are matched to the ID classes by name: a
subset is fine, a class the ID data does not have is refused (:class:`UsageError`), since no head
trained on the ID classes can be right about it. Each set is named after its folder or file.
"""

from __future__ import annotations

import os

import numpy as np

from pyrobust.errors import UsageError

__all__ = ["check_ood_paths", "load_ood_set", "ood_set_name"]


def ood_set_name(path: str) -> str:
    """The name a set is reported under: a folder's base name, or an ``.npz`` file's name without ``.npz``."""
    base = os.path.basename(os.path.normpath(path))
    return base[:-4] if base.lower().endswith(".npz") else base


def check_ood_paths(paths, reserved=()) -> list[str]:
    """The sets' names; :class:`UsageError` for a path that is neither a folder nor an ``.npz`` file, or two
    sets (or a set and a name in ``reserved``) under one name."""
    names = []
    for path in paths:
        if not isinstance(path, str) or not path:
            raise UsageError(f"ood_datasets entries must be paths, got {path!r}")
        if not os.path.exists(path):
            raise UsageError(f"OOD dataset {path!r} does not exist")
        if not os.path.isdir(path) and not path.lower().endswith(".npz"):
            raise UsageError(f"OOD dataset {path!r} is neither a folder of class sub-folders nor an .npz file")
        name = ood_set_name(path)
        if name in names or name in reserved:
            raise UsageError(f"two OOD sets would be reported as {name!r} ({path!r}); rename one")
        names.append(name)
    return names


def _class_index(path: str, classes, id_classes: list[str]) -> list[int]:
    classes = [str(c) for c in classes]
    unknown = [c for c in classes if c not in id_classes]
    if unknown:
        raise UsageError(f"OOD dataset {path!r} has class(es) {', '.join(map(repr, unknown[:10]))} that the ID "
                         f"data does not have (ID classes: {', '.join(id_classes)})")
    return [id_classes.index(c) for c in classes]


def _folder_set(path: str, id_classes: list[str], image_size: int):
    from pyrobust.data import ImageFolderDataset

    found = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise UsageError(f"OOD dataset {path!r} has no class sub-folders (expected {path}/<class>/<image>)")
    _class_index(path, found, id_classes)
    try:  # labels are positions in ``classes``: the ID class list makes them ID class indices
        return ImageFolderDataset(path, image_size=image_size, channels=3, classes=id_classes)
    except ValueError as exc:
        raise UsageError(f"OOD dataset {path!r}: {str(exc).splitlines()[0]}") from None


def _npz_set(path: str, id_classes: list[str], image_size: int):
    from pyrobust.data import ArrayDataset

    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("images", "labels") if k not in f.files]
            if missing:
                raise UsageError(f"OOD dataset {path!r} lacks the array(s) {', '.join(missing)} "
                                 f"(it has {', '.join(f.files) or 'none'})")
            images, labels = f["images"], f["labels"]
            classes = f["classes"] if "classes" in f.files else None
    except (OSError, ValueError) as exc:
        raise UsageError(f"OOD dataset {path!r} is not a readable .npz file: {str(exc).splitlines()[0]}") from None
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"OOD dataset {path!r}: labels must be a 1-D integer array, got {labels.dtype} "
                         f"of shape {labels.shape}")
    known = list(classes.reshape(-1)) if classes is not None else id_classes
    if labels.size and (labels.min() < 0 or labels.max() >= len(known)):
        what = f"its {len(known)} classes" if classes is not None else f"the {len(id_classes)} ID classes"
        raise UsageError(f"OOD dataset {path!r}: labels must index {what}, got values in "
                         f"[{labels.min()}, {labels.max()}]")
    if classes is not None:
        labels = np.asarray(_class_index(path, known, id_classes), dtype=np.int64)[labels]
    try:
        return ArrayDataset(images, labels, image_size=image_size, channels=3, classes=id_classes)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"OOD dataset {path!r}: {str(exc).splitlines()[0]}") from None


def load_ood_set(path: str, id_classes, image_size: int):
    """The set at ``path`` as a dataset of ``(float32 (3, image_size, image_size) in [0, 1], ID class index)``."""
    id_classes = [str(c) for c in id_classes]
    if os.path.isdir(path):
        ds = _folder_set(path, id_classes, image_size)
    else:
        ds = _npz_set(path, id_classes, image_size)
    if len(ds) == 0:
        raise UsageError(f"OOD dataset {path!r} holds no images")
    return ds
