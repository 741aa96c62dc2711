"""The ``pyrobust`` command's own contract: every usage mistake is one line on stderr, exit status
2, nothing on stdout, found before any work (``probe``, ``extract``, ``bench``, ``info``)."""

import os

import numpy as np

from tests.bad_input.fixtures import CommandError, blobs, cli, fresh_dir, save_npy
from tests.bad_input.harness import bad, good, table

E = CommandError


def probe_files(n_x=60, n_y=None, X=None, y=None):
    folder = fresh_dir()
    Xd, yd = blobs(n_x)
    X = Xd if X is None else X
    y = (yd if n_y is None else np.arange(n_y) % 3) if y is None else y
    return save_npy(X, "x.npy", folder), save_npy(y, "y.npy", folder)


def probe(*extra, X=None, y=None, n_y=None, out=True):
    x_path, y_path = probe_files(n_y=n_y, X=X, y=y)
    args = ["probe", x_path, "--train-y", y_path, "--no-progress", "--n-c", "2"]
    if out:
        args += ["--out", os.path.join(fresh_dir(), "out")]
    return cli(*args, *extra)


def probe_ran():
    out = os.path.join(fresh_dir(), "out")
    x_path, y_path = probe_files()
    text = cli("probe", x_path, "--train-y", y_path, "--no-progress", "--n-c", "2", "--out", out)
    return "best C" in text and os.path.isfile(os.path.join(out, "probe_head.safetensors"))


def a_file():
    path = os.path.join(fresh_dir(), "file")
    open(path, "w").write("x")
    return path


def garbage(ext):
    path = os.path.join(fresh_dir(), "bad" + ext)
    open(path, "wb").write(b"\x93NUMPY garbage that is no header at all")
    return path


def extract(*extra):
    return cli("extract", "--backbone", "small_resnet", "--no-progress", "--out",
               os.path.join(fresh_dir(), "f"), *extra)


X60, _ = blobs()
CASES = table(
    bad("no command", lambda: cli(), E, r"give a command"),
    bad("unknown command", lambda: cli("nope"), E, r"invalid choice: 'nope'"),
    bad("info extra argument", lambda: cli("info", "--fast"), E, r"unrecognized arguments: --fast"),
    bad("bench unknown name", lambda: cli("bench", "nope"), E, r"no benchmark 'nope'"),
    bad("bench device", lambda: cli("bench", "--device", "tpu"), E, r"--device.*'tpu'"),
    # probe: options
    bad("probe rows vs labels", lambda: probe(n_y=50), E, r"60 rows but --train-y .* 50 labels"),
    bad("probe more labels", lambda: probe(n_y=120), E, r"60 rows but --train-y .* 120 labels"),
    bad("probe n-c zero", lambda: probe("--n-c", "0"), E, r"--n-c .*>= 1.*0"),
    bad("probe n-c negative", lambda: probe("--n-c", "-3"), E, r"--n-c"),
    bad("probe n-c huge", lambda: probe("--n-c", "100000000"), E, r"--n-c .*10000"),
    bad("probe n-c float", lambda: probe("--n-c", "2.5"), E, r"--n-c.*'2.5'"),
    bad("probe c-min nan", lambda: probe("--c-min", "nan"), E, r"--c-min .*nan"),
    bad("probe c-max inf", lambda: probe("--c-max", "inf"), E, r"--c-max .*inf"),
    bad("probe c-min above c-max", lambda: probe("--c-min", "3", "--c-max", "1"), E, r"--c-min \(3\).*--c-max \(1\)"),
    bad("probe tol zero", lambda: probe("--tol", "0"), E, r"--tol .*> 0"),
    bad("probe tol nan", lambda: probe("--tol", "nan"), E, r"--tol .*nan"),
    bad("probe max-iter zero", lambda: probe("--max-iter", "0"), E, r"--max-iter .*>= 1"),
    bad("probe val-fraction 1.5", lambda: probe("--val-fraction", "1.5"), E, r"--val-fraction .*1.5"),
    bad("probe val-fraction zero", lambda: probe("--val-fraction", "0"), E, r"--val-fraction"),
    bad("probe val-fraction nan", lambda: probe("--val-fraction", "nan"), E, r"--val-fraction .*nan"),
    bad("probe seed negative", lambda: probe("--seed", "-1"), E, r"--seed .*-1"),
    bad("probe device gpu", lambda: probe("--device", "gpu"), E, r"device .*'gpu'"),
    bad("probe device meta", lambda: probe("--device", "meta"), E, r"--device .*'meta'"),
    bad("probe standardize", lambda: probe("--standardize", "yes"), E, r"--standardize.*'yes'"),
    bad("probe unknown option", lambda: probe("--lr", "3"), E, r"unrecognized arguments: --lr"),
    # probe: files
    bad("probe out is a file", lambda: probe("--out", a_file(), out=False), E, r"is a file"),
    bad("probe out under a file", lambda: probe("--out", os.path.join(a_file(), "sub"), out=False), E,
        r"cannot be created"),
    bad("probe out empty", lambda: probe("--out", "", out=False), E, r"output folder|--out"),
    bad("probe train missing", lambda: cli("probe", "/nonexistent/x.npy", "--train-y", "y.npy"), E,
        r"'/nonexistent/x.npy' does not exist"),
    bad("probe train is a folder", lambda: cli("probe", fresh_dir() + "/", "--train-y", "y.npy"), E, r"is a folder"),
    bad("probe labels missing", lambda: cli("probe", probe_files()[0], "--train-y", "/nonexistent/y.npy"), E,
        r"--train-y.*'/nonexistent/y.npy' does not exist"),
    bad("probe npy without labels", lambda: cli("probe", probe_files()[0]), E, r"--train-y"),
    bad("probe txt", lambda: cli("probe", a_file() + ".txt"), E, r"does not exist|expected .npy"),
    bad("probe wrong extension", lambda: cli("probe", garbage(".csv")), E, r"bad.csv.*expected .npy, .npz"),
    bad("probe damaged npy", lambda: cli("probe", garbage(".npy"), "--train-y", probe_files()[1]), E,
        r"bad.npy.*cannot be read"),
    bad("probe damaged npz", lambda: cli("probe", garbage(".npz")), E, r"bad.npz.*cannot be read"),
    bad("probe damaged safetensors", lambda: cli("probe", garbage(".safetensors")), E, r"bad.safetensors.*cannot be read"),
    bad("probe pickled npy", lambda: probe(X=np.array([{}, {}], dtype=object)), E, r"x.npy.*cannot be read"),
    bad("probe npz without keys", lambda: cli("probe", _npz(a=X60)), E, r"should hold features under one of"),
    bad("probe X 1-D", lambda: probe(X=X60[:, 0]), E, r"2-D.*\(60,\)"),
    bad("probe X strings", lambda: probe(X=X60.astype(str)), E, r"real numbers.*<U"),
    bad("probe y 2-D", lambda: probe(y=np.zeros((60, 2))), E, r"--train-y .*1-D.*\(60, 2\)"),
    bad("probe X NaN", lambda: probe(X=np.where(np.arange(60)[:, None] == 9, np.nan, X60)), E, r"train features .*x.npy.* NaN.*row: 9"),
    bad("probe y NaN", lambda: probe(y=np.where(np.arange(60) == 4, np.nan, np.arange(60) % 3)), E, r"--train-y .*y.npy.* NaN .*index 4"),
    bad("probe one class", lambda: probe(y=np.zeros(60, np.int64)), E, r"2 classes"),
    bad("probe val missing", lambda: probe("--val", "/nonexistent/v.npy", "--val-y", "/nonexistent/w.npy"), E,
        r"val features file '/nonexistent/v.npy' does not exist"),
    bad("probe val-y without val", lambda: probe("--val-y", probe_files()[1]), E, r"--val-y .*without --val"),
    bad("probe val width", lambda: probe("--val", save_npy(X60[:, :3]), "--val-y", probe_files()[1]), E,
        r"val features .* 3 features, train features .* 5"),
    bad("probe train-y with npz", lambda: cli("probe", _npz(X=X60, y=np.arange(60) % 3), "--train-y", "y.npy"), E,
        r"--train-y is for .npy"),
    good("probe runs", probe_ran),
    # extract
    bad("extract dataset", lambda: extract("--dataset", "/nonexistent/data"), E, r"dataset '/nonexistent/data'"),
    bad("extract batch size", lambda: extract("--batch-size", "0"), E, r"--batch-size"),
    bad("extract image size", lambda: extract("--image-size", "-4"), E, r"--image-size"),
    bad("extract out is a file", lambda: cli("extract", "--out", a_file()), E, r"is a file"),
    bad("extract device", lambda: extract("--device", "gpu"), E, r"device .*'gpu'"),
    bad("extract backbone", lambda: cli("extract", "--backbone", "nope", "--out", fresh_dir()), E, r"backbone 'nope'"),
    bad("extract splits", lambda: extract("--splits", "train,nope"), E, r"--splits .*'train,nope'"),
    bad("extract layer", lambda: extract("--layer", "nope"), E, r"--layer 'nope'"),
    bad("extract dtype", lambda: extract("--dtype", "float64"), E, r"--dtype.*'float64'"),
    bad("extract seed", lambda: extract("--seed", "-1"), E, r"--seed .*-1"),
)


def _npz(**arrays):
    path = os.path.join(fresh_dir(), "f.npz")
    np.savez(path, **arrays)
    return path


def study_config(text: str) -> str:
    """A study TOML file holding ``text`` (unset keys keep the demo's defaults)."""
    path = os.path.join(fresh_dir(), "study.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def lpft(text: str):
    out = os.path.join(fresh_dir(), "out")
    return cli("lpft", "--config", study_config(f'[study]\nout = "{out}"\n{text}\n'))


STUDY_CASES = table(
    bad("lpft max_train negative", lambda: lpft("max_train = -1"), E, r"max_train must be >= 0"),
    bad("lpft ft_lrs string", lambda: lpft('ft_lrs = ["fast"]'), E, r"'ft_lrs' .*should be float, got 'fast'"),
    bad("lpft c_min nan", lambda: lpft("c_min = nan"), E, r"'c_min' should be a finite number"),
    bad("lpft c_min above c_max", lambda: lpft("c_min = 3.0"), E, r"c_min must be below c_max"),
    bad("lpft lr zero", lambda: lpft("lpft_lrs = [0.0]"), E, r"lpft_lrs must hold learning rates > 0"),
    bad("lpft seeds negative", lambda: lpft("seeds = [-2]"), E, r"seeds must be integers >= 0"),
    bad("lpft misspelt table", lambda: lpft("epochs = 2\n[studdy]\nepochs = 3"), E, r"'studdy' outside the \[study\]"),
    bad("lpft unknown key", lambda: lpft("epoch = 2"), E, r"unknown key\(s\) epoch"),
    bad("lpft bool for a count", lambda: lpft("epochs = true"), E, r"'epochs' should be int"),
    bad("lpft empty out", lambda: cli("lpft", "--config", study_config('[study]\nout = ""\n')), E, r"output folder"),
)
CASES.update(STUDY_CASES)
