"""The ``pyrobust`` command: studies, feature caching, probes, benchmarks and build facts.

    pyrobust demo       LP vs FT vs LP-FT on a pretrained backbone, with a report
    pyrobust lpft       the same study configured from a TOML file
    pyrobust mixstudy   train with each batch mixer, accuracy under corruptions, CAMs
    pyrobust extract    cache a backbone's features of a dataset
    pyrobust probe      sweep a linear probe over a grid of C on saved features
    pyrobust bench      run the benchmarks
    pyrobust info       versions, build configuration, CUDA kernels present

A mistake in the arguments (an unknown name, a missing path, an output folder that is a file, a
config with unknown keys) is reported in one line with exit status 2, before any work is done.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

from pyrobust.errors import CommandParser, UsageError

# subcommand -> (module, one-line help); each module has add_arguments(parser) and run(args) -> int
COMMANDS = {
    "demo": ("pyrobust.study.demo", "LP vs FT vs LP-FT on a pretrained backbone, with a report"),
    "lpft": ("pyrobust.study.lpft_command", "the LP-FT study configured from a TOML file"),
    "mixstudy": ("pyrobust.study.mixstudy", "train with each batch mixer; accuracy under corruptions; CAMs"),
    "extract": ("pyrobust.features.command", "cache a backbone's features of a dataset"),
    "probe": ("pyrobust.probe.command", "sweep a linear probe over a grid of C on saved features"),
}


def _info(args) -> int:
    import platform

    import torch

    import pyrobust

    print(f"pyrobust {pyrobust.__version__}")
    print(f"python   {platform.python_version()} ({sys.executable})")
    print(f"torch    {torch.__version__} (CUDA {torch.version.cuda or 'none'}; device available: {torch.cuda.is_available()})")
    try:
        info = pyrobust.build_info()
    except ImportError as exc:
        print(f"core     not loadable: {exc}")
        return 1
    print(f"core     built for torch {info.get('torch')}, CUDA {info.get('cuda') or 'none'}, arch list {info.get('arch_list') or '-'}")
    print(f"CUDA kernels built: {pyrobust.has_cuda_kernels()}")
    print(f"threads  {torch.get_num_threads()} intra-op")
    # What decides the CPU mixers' speed: the vector ISA (ATEN_CPU_CAPABILITY=default also keeps
    # pyrobust's uint8 rows off AVX2) and whether fresh outputs can get huge pages.
    print(f"cpu      {torch.backends.cpu.get_cpu_capability()} (ATen's capability)")
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read().strip()
    except OSError:
        thp = "unknown"
    off = os.environ.get("PYROBUST_HUGE_PAGES") == "0"
    print(f"huge pages for fresh mixer outputs: {'off (PYROBUST_HUGE_PAGES=0)' if off else 'requested'}; "
          f"kernel THP: {thp}")
    return 0


def _bench(args) -> int:
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if not os.path.isdir(root):
        raise UsageError(
            "pyrobust bench runs the benchmarks of a source checkout (its benchmarks/ folder), and this"
            f" pyrobust is installed without one ({os.path.dirname(os.path.abspath(__file__))}); clone the"
            " repository and run `make bench` or `pyrobust bench` there"
        )
    names = args.names or ["mix", "probe", "lpft"]
    status = 0
    for name in names:
        script = os.path.join(root, f"bench_{name}.py")
        if not os.path.exists(script):
            raise UsageError(f"no benchmark {name!r} (benchmarks/bench_{name}.py); known: mix, probe, lpft")
    for name in names:
        print(f"== bench_{name} ==", flush=True)
        extra = ["--device", args.device] if args.device != "cpu" else []
        status |= subprocess.call([sys.executable, os.path.join(root, f"bench_{name}.py"), *extra])
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="pyrobust", description="Robust transfer learning, fast and measurable.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as exc:
            p.set_defaults(_missing=str(exc))
    p = sub.add_parser("bench", help="run the benchmarks (mix, probe, lpft)")
    p.add_argument("names", nargs="*", help="which benchmarks (default: all)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.set_defaults(_handler=_bench)
    p = sub.add_parser("info", help="versions, build configuration, CUDA kernels present")
    p.set_defaults(_handler=_info)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        names = ", ".join(parser._subparsers._group_actions[0].choices)
        print(f"pyrobust: error: give a command, one of {names} (see pyrobust --help)", file=sys.stderr)
        return 2
    try:
        if hasattr(args, "_handler"):
            return int(args._handler(args) or 0)
        if hasattr(args, "_missing"):
            raise UsageError(f"'{args.command}' is not available in this installation ({args._missing})")
        return int(importlib.import_module(args._module).run(args) or 0)
    except UsageError as exc:
        print(f"pyrobust {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pyrobust {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
