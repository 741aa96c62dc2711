"""The compiled ops, raw (``torch.ops.pyrobust.*``) and through their Python wrappers: shapes,
dtypes, devices (meta included), ranges and sizes that would not fit in memory."""

import torch

from pyrobust.ops import mix as mix_ops
from pyrobust.ops import probe as probe_ops
from tests.bad_input.harness import bad, good, table

V, T = ValueError, TypeError
R = (ValueError, TypeError, RuntimeError)  # raw ops: TORCH_CHECK raises RuntimeError
ops = torch.ops.pyrobust
f64 = torch.float64


def logits(n=4, m=2, k=3, **kw):
    return torch.zeros(n, m, k, dtype=f64, **kw)


def y(n=4, k=3, **kw):
    return (torch.arange(n) % k).to(**kw) if kw else torch.arange(n) % k


def w(n=4, **kw):
    return torch.ones(n, dtype=f64, **kw)


def solve_args(**over):
    n, d, m, k = 6, 3, 2, 3
    args = dict(X=torch.randn(n, d, dtype=f64), target=torch.arange(n) % k, weight=torch.ones(n, dtype=f64),
                lambdas=torch.tensor([0.1, 0.01], dtype=f64), coef=torch.zeros(m, d, k, dtype=f64),
                intercept=torch.zeros(m, k, dtype=f64), center=torch.zeros(d, dtype=f64),
                scale=torch.ones(d, dtype=f64), eigvecs=torch.eye(d, dtype=f64), eigvals=torch.ones(d, dtype=f64),
                tol=1e-6, max_iter=20, history=5, chunk_rows=0)
    args.update(over)
    return args


def solve(**over):
    return probe_ops.solve(**solve_args(**over))


def raw_solve(**over):
    a = solve_args(**over)
    return ops.probe_solve(*a.values())


IMG = torch.rand(4, 3, 8, 8)
PARTNER = torch.tensor([1, 0, 3, 2])
PARAMS = torch.tensor([[0.5, 0.5, 0.2, 0.2, 1.0, 0.0]] * 4)


def mix(**kw):
    args = dict(images=IMG, partner=PARTNER, params=PARAMS, mode="gaussian")
    args.update(kw)
    return mix_ops.mix(**args)


def draw(**kw):
    args = dict(n=4, height=8, width=8, family="cutmix", args=[1.0])
    args.update(kw)
    return mix_ops.mix_draw(**args)


def targets(**kw):
    args = dict(images=IMG, labels=torch.tensor([0, 1, 2, 0]), partner=PARTNER, params=PARAMS, mode="gaussian",
                invert=False, num_classes=3)
    args.update(kw)
    return mix_ops.mix_targets(**args)


def batch(**kw):
    args = dict(images=IMG, labels=torch.tensor([0, 1, 2, 0]), family="cutmix", args=[1.0], p=1.0, per_sample=True,
                pairing="permute", generator=None, mode="trapezoid", invert=False, fill=None, num_classes=3)
    args.update(kw)
    return mix_ops.mix_batch(**args)


META = dict(device="meta")
CASES = table(
    # probe_loss_grad
    bad("loss_grad logits 2-D", lambda: probe_ops.loss_grad(torch.zeros(4, 3, dtype=f64), y(), w()), R, r"logits"),
    bad("loss_grad K=0", lambda: probe_ops.loss_grad(logits(k=0), y(), w()), R, r"K >= 1"),
    bad("loss_grad target length", lambda: probe_ops.loss_grad(logits(), y(5), w()), R, r"target"),
    bad("loss_grad target float", lambda: probe_ops.loss_grad(logits(), y().double(), w()), R, r"target"),
    bad("loss_grad target 2-D", lambda: probe_ops.loss_grad(logits(), y()[:, None], w()), R, r"target"),
    bad("loss_grad target out of range", lambda: probe_ops.loss_grad(logits(), torch.tensor([0, 1, 3, 0]), w()), R,
        r"target"),
    bad("loss_grad weight dtype", lambda: probe_ops.loss_grad(logits(), y(), w().float()), R, r"weight"),
    bad("loss_grad weight length", lambda: probe_ops.loss_grad(logits(), y(), w(3)), R, r"weight"),
    bad("loss_grad logits int", lambda: probe_ops.loss_grad(logits().long(), y(), w()), R, r"logits"),
    bad("loss_grad logits float16", lambda: probe_ops.loss_grad(logits().half(), y(), w().half()), R, r"logits"),
    bad("loss_grad meta target length", lambda: probe_ops.loss_grad(logits(**META), y(5).to("meta"), w(**META)), R,
        r"target"),
    bad("loss_grad meta weight dtype", lambda: probe_ops.loss_grad(logits(**META), y().to("meta"),
                                                                    w(**META).float()), R, r"weight"),
    bad("loss_grad meta logits 2-D", lambda: probe_ops.loss_grad(torch.zeros(4, 3, dtype=f64, **META),
                                                                  y().to("meta"), w(**META)), R, r"logits"),
    bad("loss_grad mixed devices", lambda: probe_ops.loss_grad(logits(), y().to("meta"), w()), R, r"device|meta"),
    good("loss_grad N=0", lambda: probe_ops.loss_grad(logits(n=0), y(0), w(0))),
    good("loss_grad m=0", lambda: probe_ops.loss_grad(logits(m=0), y(), w())),
    # probe_line_stats
    bad("line_stats direction shape", lambda: probe_ops.line_stats(logits(), logits(m=3), y(), w(),
                                                                    torch.zeros(2, dtype=f64)), R, r"direction"),
    bad("line_stats step length", lambda: probe_ops.line_stats(logits(), logits(), y(), w(),
                                                                torch.zeros(3, dtype=f64)), R, r"step"),
    bad("line_stats step dtype", lambda: probe_ops.line_stats(logits(), logits(), y(), w(), torch.zeros(2)), R,
        r"step"),
    bad("line_stats target", lambda: probe_ops.line_stats(logits(), logits(), torch.tensor([0, 9, 0, 0]), w(),
                                                           torch.zeros(2, dtype=f64)), R, r"target"),
    bad("line_stats meta direction", lambda: probe_ops.line_stats(logits(**META), logits(m=3, **META),
                                                                   y().to("meta"), w(**META),
                                                                   torch.zeros(2, dtype=f64, **META)), R,
        r"direction"),
    # probe_solve
    bad("solve lambdas negative", lambda: solve(lambdas=torch.tensor([-0.1, 0.01], dtype=f64)), R, r"lambda"),
    bad("solve lambdas NaN", lambda: solve(lambdas=torch.tensor([float("nan"), 0.01], dtype=f64)), R, r"lambda"),
    bad("solve lambdas length", lambda: solve(lambdas=torch.tensor([0.1], dtype=f64)), R, r"lambda|coef"),
    bad("solve tol NaN", lambda: solve(tol=float("nan")), R, r"tol"),
    bad("solve tol negative", lambda: solve(tol=-1.0), R, r"tol"),
    bad("solve max_iter negative", lambda: solve(max_iter=-5), R, r"max_iter"),
    bad("solve history zero", lambda: solve(history=0), R, r"history"),
    good("solve history beyond max_iter", lambda: solve(history=2 ** 40)),
    bad("solve chunk_rows negative", lambda: solve(chunk_rows=-1), R, r"chunk_rows"),
    bad("solve coef shape", lambda: solve(coef=torch.zeros(2, 4, 3, dtype=f64)), R, r"coef"),
    bad("solve intercept shape", lambda: solve(intercept=torch.zeros(2, 2, dtype=f64)), R, r"intercept"),
    bad("solve eigvecs shape", lambda: solve(eigvecs=torch.eye(2, dtype=f64)), R, r"eigvecs"),
    bad("solve eigvals length", lambda: solve(eigvals=torch.ones(2, dtype=f64)), R, r"eigvals"),
    bad("solve center length", lambda: solve(center=torch.zeros(2, dtype=f64)), R, r"center"),
    bad("solve scale zero", lambda: solve(scale=torch.zeros(3, dtype=f64)), R, r"scale"),
    bad("solve weight negative", lambda: solve(weight=-torch.ones(6, dtype=f64)), R, r"weight"),
    bad("solve target length", lambda: solve(target=torch.arange(5) % 3), R, r"target"),
    bad("solve X 1-D", lambda: solve(X=torch.randn(6, dtype=f64)), R, r"X"),
    bad("solve X width", lambda: solve(X=torch.randn(6, 4, dtype=f64)), R, r"X|coef"),
    bad("solve X int", lambda: solve(X=torch.ones(6, 3, dtype=torch.long)), R, r"X"),
    bad("solve products", lambda: solve(products="fast"), R, r"products"),
    bad("solve history pairs shape", lambda: solve(history_s=torch.zeros(2, 9, 3, dtype=f64),
                                                   history_y=torch.zeros(2, 9, 3, dtype=f64)), R, r"history"),
    bad("solve history pairs one", lambda: solve(history_s=torch.zeros(2, 4, 3, dtype=f64)), R, r"history"),
    bad("solve K=0", lambda: solve(coef=torch.zeros(2, 3, 0, dtype=f64), intercept=torch.zeros(2, 0, dtype=f64)), R,
        r"K >= 1"),
    bad("solve meta coef shape", lambda: solve(**{k: v.to("meta") if isinstance(v, torch.Tensor) else v
                                                  for k, v in solve_args(coef=torch.zeros(2, 4, 3, dtype=f64)).items()}),
        R, r"coef|D = 4"),
    bad("raw solve lambdas", lambda: raw_solve(lambdas=torch.tensor([0.1, -1.0], dtype=f64)), R, r"lambda"),
    # mix
    bad("mix images 3-D", lambda: mix(images=IMG[0]), R, r"images"),
    bad("mix partner out of range", lambda: mix(partner=torch.tensor([1, 0, 7, 2])), R, r"partner"),
    bad("mix partner negative", lambda: mix(partner=torch.tensor([1, 0, -1, 2])), R, r"partner"),
    bad("mix partner length", lambda: mix(partner=PARTNER[:3]), R, r"partner"),
    bad("mix partner float", lambda: mix(partner=PARTNER.float()), R, r"partner"),
    bad("mix params shape", lambda: mix(params=PARAMS[:, :5]), R, r"params"),
    bad("mix params rows", lambda: mix(params=PARAMS[:3]), R, r"params"),
    bad("mix params dtype", lambda: mix(params=PARAMS.double()), R, r"params"),
    bad("mix mode", lambda: mix(mode="circle"), R, r"mode"),
    bad("mix images int32", lambda: mix(images=(IMG * 9).int()), R, r"images|dtype"),
    bad("mix out shape", lambda: mix(out=torch.empty(4, 3, 8, 7)), R, r"out"),
    bad("mix out aliases images", lambda: mix(images=IMG.clone(), out=None) if False else
        mix_ops.mix(IMG, PARTNER, PARAMS, "gaussian", out=IMG), R, r"out|alias"),
    bad("mix out dtype", lambda: mix(out=torch.empty(4, 3, 8, 8, dtype=f64)), R, r"out"),
    bad("mix meta partner length", lambda: mix(images=IMG.to("meta"), partner=PARTNER[:3].to("meta"),
                                               params=PARAMS.to("meta")), R, r"partner"),
    bad("mix meta params shape", lambda: mix(images=IMG.to("meta"), partner=PARTNER.to("meta"),
                                             params=PARAMS[:, :5].to("meta")), R, r"params"),
    good("mix N=0", lambda: mix(images=IMG[:0], partner=PARTNER[:0], params=PARAMS[:0])),
    good("mix H=0", lambda: mix(images=torch.rand(4, 3, 0, 8))),
    bad("mix fill NaN", lambda: mix(fill=float("nan")), V, r"fill should be finite"),
    # mix_mask / mix_lambda
    bad("mix_mask height negative", lambda: mix_ops.mix_mask(PARAMS, "gaussian", False, -1, 8), R, r"height"),
    bad("mix_mask huge", lambda: mix_ops.mix_mask(PARAMS, "gaussian", False, 2 ** 31, 2 ** 31), V,
        r"mix_mask's \(4, 2147483648, 2147483648\).*GiB"),
    bad("mix_mask params 1-D", lambda: mix_ops.mix_mask(PARAMS[0], "gaussian", False, 8, 8), R, r"params"),
    bad("mix_mask mode", lambda: mix_ops.mix_mask(PARAMS, "square", False, 8, 8), R, r"mode"),
    bad("mix_lambda width zero", lambda: mix_ops.mix_lambda(PARAMS, "gaussian", False, 8, 0), R, r"width"),
    bad("mix_lambda meta params", lambda: mix_ops.mix_lambda(PARAMS[:, :4].to("meta"), "gaussian", False, 8, 8), R,
        r"params"),
    # mix_draw
    bad("mix_draw huge n", lambda: draw(n=2 ** 40), V, r"n=1099511627776 .*GiB"),
    bad("mix_draw huge image", lambda: draw(height=2 ** 40, width=2 ** 40), V, r"height|width"),
    bad("mix_draw n negative", lambda: draw(n=-1), V, r"n "),
    bad("mix_draw n float", lambda: draw(n=2.5), T, r"n "),
    good("mix_draw height zero", lambda: draw(height=0)),
    bad("mix_draw family", lambda: draw(family="smoothmix"), V, r"family .*'smoothmix'"),
    bad("mix_draw args length", lambda: draw(args=[1.0, 2.0]), V, r"takes 1"),
    bad("mix_draw args NaN", lambda: draw(args=[float("nan")]), V, r"args .*nan"),
    bad("mix_draw args inf", lambda: draw(family="circle", args=[float("inf"), float("inf"), 1.0]), V, r"inf"),
    bad("mix_draw args string", lambda: draw(args=["a"]), (V, T), r"args"),
    bad("mix_draw p NaN", lambda: draw(p=float("nan")), V, r"p .*nan"),
    bad("mix_draw p 2", lambda: draw(p=2.0), V, r"p .*2"),
    bad("mix_draw pairing", lambda: draw(pairing="shuffle"), V, r"pairing .*'shuffle'"),
    bad("mix_draw generator cuda-like", lambda: draw(generator=3), (V, T), r"generator"),
    bad("raw mix_draw huge n", lambda: ops.mix_draw(2 ** 40, 8, 8, "cutmix", [1.0], 1.0, True, "permute", True, None),
        R, r"n = 1099511627776 samples need .* GiB"),
    bad("raw mix_draw inf args", lambda: ops.mix_draw(4, 8, 8, "circle", [float("inf"), float("inf"), 1.0], 1.0,
                                                      True, "permute", True, None), R, r"args .*inf"),
    bad("raw mix_draw huge side", lambda: ops.mix_draw(4, 2 ** 25, 8, "cutmix", [1.0], 1.0, True, "permute", True,
                                                       None), R, r"height and width .*33554432"),
    good("mix_draw n=0", lambda: draw(n=0)),
    # mix_targets / mix_batch
    bad("targets label out of range", lambda: targets(labels=torch.tensor([0, 1, 5, 0])), R, r"labels"),
    bad("targets label negative", lambda: targets(labels=torch.tensor([0, -1, 2, 0])), R, r"labels"),
    bad("targets num_classes zero", lambda: targets(num_classes=0), R, r"num_classes"),
    bad("targets num_classes huge", lambda: targets(num_classes=2 ** 40), V, r"targets.*1099511627776.*GiB"),
    bad("targets smoothing 1", lambda: targets(label_smoothing=1.0), R, r"label_smoothing"),
    bad("targets smoothing NaN", lambda: targets(label_smoothing=float("nan")), R, r"label_smoothing"),
    bad("targets labels length", lambda: targets(labels=torch.tensor([0, 1])), R, r"labels"),
    bad("targets labels float", lambda: targets(labels=torch.tensor([0.0, 1, 2, 0])), R, r"labels"),
    bad("targets meta num_classes", lambda: targets(images=IMG.to("meta"), labels=torch.tensor([0, 1, 2, 0]).to("meta"),
                                                    partner=PARTNER.to("meta"), params=PARAMS.to("meta"),
                                                    num_classes=-3), R, r"num_classes"),
    bad("batch labels out of range", lambda: batch(labels=torch.tensor([0, 1, 9, 0])), R, r"labels"),
    bad("batch family", lambda: batch(family="x"), R, r"family"),
    bad("batch num_classes", lambda: batch(num_classes=0), R, r"num_classes"),
    bad("batch p", lambda: batch(p=-0.5), R, r"p "),
    bad("batch images 2-D", lambda: batch(images=IMG[0, 0]), R, r"images"),
)
