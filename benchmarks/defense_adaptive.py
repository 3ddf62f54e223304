"""Non-adaptive vs adaptive attacks on four MNIST defenses ("Table 2"), and a detector under a joint attack.

table2: mnist-small, plain / Gaussian noise layers / defensive distillation / contrastive latent space
with 1-NN, attacked by FGSM and PGD at Linf 0.1 and 0.3, each as a naive evaluation runs it and as an
adaptive attacker would (EOT over the noise, the CW margin loss, PGD on the 1-NN decision itself).
detector: a binary input detector trained against PGD Linf 0.3, feature squeezing for comparison,
and a joint attack on classifier + detector (DetectorGuard, Carlini & Wagner 2017, arXiv:1705.07263).
CPU, a few minutes per section on 2 cores. Usage:

    PYTHONPATH=src python benchmarks/defense_adaptive.py --section table2|detector|all [--n 500] [--device cpu] \
        [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import cache, lru_cache

import torch
from torch import Tensor, nn

from sparring.attacks.eot import eot
from sparring.attacks.fgsm import fgsm
from sparring.attacks.pgd import pgd
from sparring.data import load_dataset
from sparring.defenses.contrastive import CONTRASTIVE_TRAINING, LatentNN, contrastive_training
from sparring.defenses.detection import FeatureSqueezing
from sparring.defenses.detector import DETECTOR_TRAINING, train_detector
from sparring.defenses.distillation import DISTILL_TRAINING, distill
from sparring.defenses.noise import GaussianNoise, insert_noise
from sparring.defenses.preprocess import BitDepth, MedianBlur
from sparring.evaluate.detect import detection_report
from sparring.models import build_model
from sparring.rng import SampleGenerators
from sparring.threat import Norm, ThreatModel
from sparring.training import TrainSettings, train

EPOCHS, LR = 2, 0.05  # plain and noisy models: SGD, train()'s old defaults otherwise
SIGMA, TEMPERATURE, MARGIN, PER_CLASS = 0.05, 100.0, 2.0, 5
DISTILL_LR = 0.01  # Adam; distill's default 1e-3 leaves the T=100 student at ~87-90% after 2 epochs
PLAIN_TRAINING = TrainSettings(epochs=EPOCHS, batch_size=128, optimizer="sgd", lr=LR, weight_decay=5e-4)
DISTILLED = DISTILL_TRAINING.replace(epochs=EPOCHS, lr=DISTILL_LR)  # Adam, batch 128, no weight decay
CONTRASTIVE = CONTRASTIVE_TRAINING.replace(epochs=EPOCHS)  # Adam lr 1e-3, batch 128, no weight decay
LATENT = "net.classifier.2"  # the penultimate layer (ReLU after the 100-unit dense layer)
EPSILONS, STEPS, STEP_SIZE = (0.1, 0.3), 40, 0.01
EOT_DRAWS, NOISE_DRAWS = 10, 10
DETECTOR_TRAIN, DETECTOR_EPOCHS, DETECTOR_EPS = 5000, 10, 0.3
FPR, JOINT_TARGETS = 0.05, 3


@lru_cache(maxsize=1)
def _mnist() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    ds = load_dataset("mnist")
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


def _seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


def _noise_layers(model: nn.Module) -> list[GaussianNoise]:
    return [m for m in model.modules() if isinstance(m, GaussianNoise)]


def _use_noise(model: nn.Module, generator: SampleGenerators | None) -> None:
    """Point every noise layer at one stream per sample (the batch must then be exactly those samples)."""
    for layer in _noise_layers(model):
        layer.generator = generator


@cache
def _model(kind: str, device: str, seed: int) -> nn.Module:
    """A trained mnist-small variant: plain, noise, distilled (the student) or contrastive (the CE+contrastive net)."""
    x, y, _, _ = _mnist()
    build = lambda: build_model("mnist-small")  # noqa: E731
    if kind == "distilled":
        student, _ = distill(build, x, y, temperature=TEMPERATURE, settings=DISTILLED, seed=seed,
                             device=device)
        return student.eval()
    model = _seeded(seed, build)
    if kind == "contrastive":
        model, _ = contrastive_training(model, x, y, layer=LATENT, margin=MARGIN, settings=CONTRASTIVE,
                                        seed=seed, device=device)
        return model.eval()
    if kind == "noise":
        insert_noise(model, SIGMA, where=("noise1", "noise2"))  # mnist-small's noise slots
    with torch.random.fork_rng():  # the training noise comes from the global RNG
        torch.manual_seed(seed)
        train(model, x, y, PLAIN_TRAINING, seed=seed, device=device)
    return model.eval()


def _accuracy(model: nn.Module, x: Tensor, y: Tensor, seed: int) -> float:
    """Accuracy in %; a noisy model is averaged over NOISE_DRAWS noise draws (the same draws for every cell)."""
    draws = NOISE_DRAWS if _noise_layers(model) else 1
    _use_noise(model, SampleGenerators(seed + 7, range(len(x))))
    with torch.no_grad():
        hits = sum(float((model(x).argmax(1) == y).float().mean()) for _ in range(draws))
    _use_noise(model, None)
    return 100 * hits / draws


def _attack(model: nn.Module, x: Tensor, y: Tensor, *, name: str, eps: float, seed: int, loss: str = "ce",
            draws: int = 1) -> Tensor:
    """FGSM or PGD (40 x 0.01, random start, 1 restart), with EOT over `draws` forward passes if > 1.

    A noisy model draws its noise from per-sample streams, so it sees the full batch at every step
    (early_stop=False); one draw per forward pass, fresh at every step."""
    threat, gens = ThreatModel(Norm.LINF, eps), SampleGenerators(seed, range(len(x)))
    noisy = bool(_noise_layers(model))
    _use_noise(model, SampleGenerators(seed + 1, range(len(x))) if noisy else None)
    run = fgsm if name == "fgsm" else pgd
    if draws > 1:
        run = eot(run, "none", draws=draws)
    params = {} if name == "fgsm" else dict(steps=STEPS, step_size=STEP_SIZE, random_start=True, restarts=1,
                                            early_stop=not noisy)
    x_adv = run(model, x, y, threat=threat, loss=loss, generator=gens, **params)
    _use_noise(model, None)
    return x_adv.detach()


def table2(n: int = 500, device: str = "cpu", seed: int = 0) -> str:
    """The student report's Table 2: robust accuracy (%) per attack x setting (rows) and defense (columns)."""
    x_train, y_train, x_test, y_test = _mnist()
    x, y = x_test[:n].to(device), y_test[:n].to(device)
    plain, noisy = _model("plain", device, seed), _model("noise", device, seed)
    student, latent = _model("distilled", device, seed), _model("contrastive", device, seed)
    nn1 = LatentNN(latent, LATENT, x_train, y_train, per_class=PER_CLASS, seed=seed).to(device).eval()
    # (deployed classifier, non-adaptive (attacked model, loss, draws), adaptive (attacked model, loss, draws))
    defenses = {
        "plain": (plain, (plain, "ce", 1), (plain, "ce", 1)),
        f"Gaussian noise (sigma {SIGMA})": (noisy, (noisy, "ce", 1), (noisy, "ce", EOT_DRAWS)),
        f"distillation (T={TEMPERATURE:g})": (student, (student, "ce", 1), (student, "margin", 1)),
        f"contrastive + 1-NN ({PER_CLASS}/class)": (nn1, (latent, "ce", 1), (nn1, "margin", 1)),
    }
    rows = [("clean", "-", [_accuracy(d[0], x, y, seed) for d in defenses.values()])]
    for name in ("fgsm", "pgd"):
        for eps in EPSILONS:
            for i, setting in ((1, "non-adaptive"), (2, "adaptive")):
                cells = []
                for deployed, *settings in defenses.values():
                    target, loss, draws = settings[i - 1]
                    x_adv = _attack(target, x, y, name=name, eps=eps, seed=seed, loss=loss, draws=draws)
                    cells.append(_accuracy(deployed, x_adv, y, seed))
                rows.append((f"{'FGSM' if name == 'fgsm' else 'PGD-40'} eps {eps:g}", setting, cells))
    head = "| attack (Linf) | setting | " + " | ".join(defenses) + " |"
    lines = [head, "|---|---|" + "---:|" * len(defenses)]
    lines += [f"| {a} | {s} | " + " | ".join(f"{c:.1f}" for c in cells) + " |" for a, s, cells in rows]
    text = f"""## 2. Table 2: non-adaptive vs adaptive attacks on MNIST defenses

Robust accuracy (%) of the deployed classifier on the attacked first {n} MNIST test images (seed {seed}).
All networks are mnist-small trained on the full MNIST training set (60,000 images) for {EPOCHS} epochs:
plain and noise with SGD lr {LR} (batch 128, momentum 0.9, weight decay 5e-4, cosine schedule); noise:
GaussianNoise(sigma={SIGMA}) after the first conv and between the dense layers, in place during training
and at test time (its accuracy is the mean over {NOISE_DRAWS} noise draws); distillation: teacher and
student {EPOCHS} epochs each at T={TEMPERATURE:g} (Adam lr {DISTILL_LR:g}), the student deployed at T=1 (its
raw logits); contrastive: CE + contrastive loss (margin {MARGIN:g}, weight 1, all pairs of the batch) on
`{LATENT}` (Adam lr 1e-3), deployed as LatentNN, 1-NN over {PER_CLASS} training images per class (seed {seed}).
Attacks: FGSM, and PGD with {STEPS} steps of {STEP_SIZE}, uniform random start, 1 restart; random starts
and noise from SampleGenerators({seed}, range({n})) (noise: seed {seed + 1}; evaluation noise: seed {seed + 7}).
Non-adaptive = attack the deployed model with CE (noise: one noise draw per step; distillation: CE on the
T=1 student; contrastive: CE on the network's own softmax head, then classify by 1-NN). Adaptive = noise:
EOT, the gradient of the mean log-softmax over {EOT_DRAWS} noise draws per step (sparring eot wrapper);
distillation: CW margin loss on the logits; contrastive: margin loss on LatentNN's outputs (minus the
distance to each class's nearest reference), i.e. PGD on the 1-NN decision itself. The plain model has
no defense to adapt to: both of its rows are the same CE attack.

"""
    return text + "\n".join(lines) + "\n"


def detector(n: int = 500, device: str = "cpu", seed: int = 0) -> str:
    """Detection of PGD Linf 0.3 on MNIST: trained input detector vs feature squeezing, then a joint attack."""
    x_train, y_train, x_test, y_test = _mnist()
    model = _model("plain", device, seed)
    threat = ThreatModel(Norm.LINF, DETECTOR_EPS)
    params = dict(steps=STEPS, step_size=STEP_SIZE, random_start=True, restarts=1)
    det = train_detector(model, x_train[:DETECTOR_TRAIN].to(device), y_train[:DETECTOR_TRAIN].to(device),
                         threat=threat, attack="pgd", attack_params=params, layer=None,
                         settings=DETECTOR_TRAINING.replace(epochs=DETECTOR_EPOCHS), seed=seed,
                         device=device).to(device)
    squeeze = FeatureSqueezing(model, [BitDepth(1), MedianBlur(3)]).to(device)
    x, y = x_test[:n].to(device), y_test[:n].to(device)
    lines = ["| detector | examples | classifier accuracy (%) | ROC AUC | detected at 5% FPR (%) "
             "| misclassified and undetected (%) |", "|---|---|---:|---:|---:|---:|"]
    for label, d in (("binary detector (inputs)", det), ("feature squeezing (1 bit, median 3x3)", squeeze)):
        report = detection_report(model, d, x, y, threat=threat, attack="pgd", attack_params=params, fpr=FPR,
                                  joint_targets=JOINT_TARGETS, seed=seed, batch_size=n)
        for row, kind in zip(report["rows"], ("PGD on the classifier", "joint PGD on classifier + detector")):
            lines.append(f"| {label} | {kind} | {100 * row['accuracy']:.1f} | {row['auc']:.3f} | "
                         f"{100 * row['detected']:.1f} | {100 * row['evaded']:.1f} |")
    with torch.no_grad():
        clean_acc = 100 * float((model(x).argmax(1) == y).float().mean())
    text = f"""## 4. Detection of adversarial examples, and a joint attack on classifier + detector

Classifier: plain mnist-small, {EPOCHS} epochs on the full MNIST training set (SGD lr {LR}, seed {seed});
clean accuracy {clean_acc:.1f}% on the first {n} test images. Attack: PGD Linf {DETECTOR_EPS}, {STEPS} steps of
{STEP_SIZE}, random start, 1 restart, CE, stopping per sample once fooled. Binary detector (train_detector,
on the input pixels: Flatten, Linear 64, ReLU, Linear 2; Adam lr 1e-3, {DETECTOR_EPOCHS} epochs, seed {seed})
trained on the first {DETECTOR_TRAIN} training images (clean) and their PGD examples (SampleGenerators({seed}, ...)).
Feature squeezing: max L1 gap of the softmax after BitDepth(1) and after MedianBlur(3) (Xu et al.'s MNIST
squeezers, the 2x2 median replaced by 3x3). Evaluation on the first {n} test images and their PGD examples
(SampleGenerators(derive({seed}, "detection attack"), range({n})), sparring.rng.derive); ROC AUC and
detection rate with the threshold at {FPR:.0%} FPR on those clean images (the same threshold for the last
column). Joint attack: DetectorGuard (K+1 logits, the last = max logit + detector margin), targeted PGD
with the margin loss toward the {JOINT_TARGETS} classes with the highest clean logits other than the label, in
turn ({STEPS} steps of {STEP_SIZE}, random start, Linf {DETECTOR_EPS}), keeping per sample the first target
reached undetected; feature squeezing is attacked through its BPDA version (for_attack: straight-through
for the bit depth, a Gaussian blur for the median). Last column: fraction of the {n} images whose example
is misclassified and not flagged.

"""
    return text + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=("table2", "detector", "all"), default="all")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name, fn in (("table2", table2), ("detector", detector)):
        if args.section in (name, "all"):
            tick = time.perf_counter()
            print(fn(n=args.n, device=args.device, seed=args.seed), flush=True)
            print(f"[{name}: {time.perf_counter() - tick:.0f} s]", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
