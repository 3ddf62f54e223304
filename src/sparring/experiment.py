"""Glue shared by the CLI commands: resolve models and attack specs, and run an experiment
(train or load, evaluate, report) into a run folder that resumes after a kill."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import AttackConfig, Config, dump_toml, parse_eps
from .errors import ConfigError, InputError, SparringError, UnknownNameError
from .evaluate import AttackSpec, evaluate
from .store import RunStore, environment
from .train import model_device


def resolve_device(name: str) -> str:
    """"auto" -> cuda when available else cpu; asking for CUDA without it is an error."""
    name = (name or "cpu").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for, but this torch build sees no CUDA device")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"expected device auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def join_job(name: str) -> tuple[str, Any, str]:
    """Resolve a device name and join a torchrun job when this process is in one (gloo on CPU, NCCL and
    GPU LOCAL_RANK on CUDA): (the resolved name, the Dist, this process's device)."""
    from .distributed import rank_device, setup

    resolved = resolve_device(name)
    dist = setup(resolved)
    return resolved, dist, rank_device(dist, resolved)


def resolve_model(spec: str, weights: str = "", *, dataset: Any = None, weights_dir: str | None = None,
                  seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """A model from an architecture name, a pretrained alias, or a saved sparring model path.

    A bare architecture gets its initial weights from `seed` (under a forked RNG), so training it is
    reproducible across processes (a resumed run retrains the same model). Returns (model, info) where
    info names the architecture and the weights' source and sha256.
    """
    from .models import MODELS, PRETRAINED, build_model, load_model, load_pretrained, load_weights
    from .paths import sha256_file

    path = Path(spec)
    stem_saved = path.with_name(path.name + ".json").is_file()  # the stem given to --out
    if spec not in MODELS and spec not in PRETRAINED and (path.suffix in (".safetensors", ".json") or path.exists()
                                                          or stem_saved):
        model, meta = load_model(path)
        weight_file = path.with_name(path.name + ".safetensors") if stem_saved else path.with_suffix(".safetensors")
        return model, {"arch": meta.get("arch", spec), "weights": str(path), "weights_sha256": sha256_file(weight_file) if weight_file.exists() else None, "meta": meta}
    if spec in PRETRAINED:
        if weights:
            raise ConfigError(f"{spec} is a pretrained alias and brings its own weights; got weights={weights!r} too")
        model = load_pretrained(spec, weights_dir=weights_dir)
        return model, {"arch": PRETRAINED.meta(spec)["arch"], "weights": spec}
    kwargs: dict[str, Any] = {}
    if dataset is not None and not weights:
        kwargs = {"num_classes": dataset.num_classes, "in_channels": dataset.input_shape[0],
                  "mean": dataset.mean, "std": dataset.std}
    if weights and weights in PRETRAINED:
        meta = PRETRAINED.meta(weights)
        if meta["arch"] != spec:
            raise ConfigError(f"pretrained weights {weights} are for {meta['arch']}, got model {spec}")
        return load_pretrained(weights, weights_dir=weights_dir), {"arch": spec, "weights": weights}
    if spec not in MODELS:
        import difflib

        known = MODELS.names() + PRETRAINED.names()
        close = difflib.get_close_matches(spec, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(f"unknown model {spec!r}{hint} (expected an architecture, a pretrained alias "
                               f"or a saved model file; known: {', '.join(known)})")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(spec, **kwargs)
    info: dict[str, Any] = {"arch": spec, "weights": None}
    if weights:
        load_weights(model, weights)
        info.update(weights=weights, weights_sha256=sha256_file(weights))
    return model, info


def check_fits(model: nn.Module, shape: tuple[int, ...], num_classes: int, what: str) -> None:
    """A dry forward pass on the model's device: the model must take (1, *shape) and give (1, num_classes)."""
    try:
        with torch.inference_mode():
            out = model.eval()(torch.zeros(1, *shape, device=model_device(model)))
    except RuntimeError as exc:
        raise InputError(f"model does not accept {what} images of shape {tuple(shape)}: {str(exc).splitlines()[0]}") from None
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise InputError(f"expected the model to output (B, {num_classes}) logits for {what}, got {tuple(out.shape)}")


def defense_chain(entries: list[tuple[str, dict[str, Any], str, str]]) -> tuple[list[dict[str, Any]], dict | None, Any]:
    """Check (name, params, eps, norm) defense entries: (specs, the one training recipe or None, its threat).

    Specs are check_defense's dicts; an adversarial-training recipe needs its eps.
    """
    from .defenses.build import RECIPES, check_defense
    from .threat import Norm, ThreatModel

    specs = [check_defense(name, params) for name, params, _, _ in entries]
    if sum(s["name"] == "autoencoder" for s in specs) > 1:
        raise ConfigError("expected at most one autoencoder defense, got two")
    recipes = [(s, eps, norm) for s, (_, _, eps, norm) in zip(specs, entries) if s["kind"] == "training"]
    if len(recipes) > 1:
        raise ConfigError(f"expected at most one training defense, got {', '.join(r[0]['name'] for r in recipes)}")
    if not recipes:
        return specs, None, None
    recipe, eps, norm = recipes[0]
    threat = None
    if recipe["name"] not in RECIPES:
        if not eps:
            raise ConfigError(f"defense {recipe['name']!r} needs eps, the training budget (--eps, or eps in a "
                              "config's [[defenses]] entry; e.g. 0.1 or 8/255)")
        threat = ThreatModel(Norm.parse(norm), parse_eps(eps)[1])
        recipe.update(eps=eps, norm=threat.norm.value)
    return specs, recipe, threat


def train_parts(specs: list[dict[str, Any]], ds: Any, parts: dict[str, Any], *, seed: int, device: str,
                progress: bool = False, log: Any = None) -> dict[str, Any]:
    """Train the defense parts that `specs` need and `parts` lacks (the MagNet autoencoder, on ds's clean
    training images); adds them to `parts` and the image shape to the spec. Returns {name: history}."""
    from .data import require_train
    from .defenses import train_autoencoder
    from .defenses.build import autoencoder_parts

    histories: dict[str, Any] = {}
    for spec in specs:
        if spec["name"] != "autoencoder" or any(k.startswith("autoencoder.") for k in parts):
            continue
        x_train, _ = require_train(ds)
        if log:
            log(f"training the autoencoder on {len(x_train)} clean {ds.name} images")
        p = spec["params"]
        ae, histories["autoencoder"] = train_autoencoder(
            x_train, width=int(p["width"]), noise=float(p["noise"]), epochs=int(p["epochs"]), lr=float(p["lr"]),
            x_val=ds.x_test[:1000], seed=seed, device=device, progress=progress, log=log)
        spec["shape"] = list(ds.input_shape)
        parts.update(autoencoder_parts(ae))
    return histories


def train_defended(model: nn.Module, ds: Any, recipe: dict[str, Any] | None, threat: Any, *,
                   schedule: str | None, checkpoint: Path | None = None, resume: bool = False,
                   **common: Any) -> tuple[nn.Module, Any]:
    """Train on ds's training split: plainly (recipe None), by distillation, with the contrastive loss
    (deployed as LatentNN over seeded reference images), on Gaussian noise (randomized smoothing's base
    classifier), or by an adversarial-training recipe (ensemble-at's surrogates "a+b" resolved to trained
    models). checkpoint / resume go to the training of the model (sparring.train.train: every recipe keeps
    <stem>.train-state.pt; distillation's teacher keeps <stem>.teacher.*); ensemble-at's bare-architecture
    surrogates are retrained (seeded, so identically) on resume. Returns (the deployed model, history)."""
    from .data import require_train
    from .defenses import (DEFENSES, LatentNN, adversarial_training, contrastive_training, distill,
                           noise_training)
    from .defenses.build import _latent_layer
    from .models import MODELS
    from .train import train

    x_train, y_train = require_train(ds)
    keep = {"checkpoint": checkpoint, "resume": resume}
    if recipe is None:
        return model, train(model, x_train, y_train, x_val=ds.x_test, y_val=ds.y_test,
                            schedule=schedule or "cosine", **common, **keep)
    name, params = recipe["name"], dict(recipe["params"])
    if name in ("distillation", "contrastive") and common.pop("augment", "none") != "none":
        raise ConfigError(f"defense {name!r} trains without augmentation: expected augment='none'")
    if name == "distillation":
        model, extra = distill(model, x_train, y_train, schedule=schedule or "cosine", **common, **params, **keep)
        return model, {"teacher": extra["teacher_history"], "student": extra["student_history"]}
    if name == "randomized-smoothing":
        return model, noise_training(model, x_train, y_train, sigma=float(params["sigma"]), x_val=ds.x_test,
                                     y_val=ds.y_test, schedule=schedule or "cosine", **common, **keep)
    if name == "contrastive":
        layer, per_class = _latent_layer(model, str(params.pop("layer"))), int(params.pop("per_class"))
        model, history = contrastive_training(model, x_train, y_train, layer=layer, schedule=schedule or "cosine",
                                              **common, **params, **keep)
        device = model_device(model)
        return LatentNN(model, layer, x_train.to(device), y_train.to(device), per_class=per_class,
                        seed=int(common.get("seed", 0))), history
    if "surrogates" in params:
        refs = [r for r in str(params["surrogates"]).split("+") if r]
        params["surrogates"] = []
        for i, ref in enumerate(refs):  # a bare architecture is first trained plainly (Tramer's static models)
            sur, _ = resolve_model(ref, dataset=ds, seed=int(common.get("seed", 0)) + 1 + i)
            if ref in MODELS:
                log = common.get("log")
                if log:
                    log(f"training the static surrogate {ref} (seed +{1 + i}) for ensemble adversarial training")
                train(sur, x_train, y_train, x_val=ds.x_test, y_val=ds.y_test, schedule=schedule or "cosine",
                      **{**common, "seed": int(common.get("seed", 0)) + 1 + i})
            params["surrogates"].append(sur.eval())
        for ref, sur in zip(refs, params["surrogates"]):
            check_fits(sur, ds.input_shape, ds.num_classes, f"{ds.name} (surrogate {ref})")
    return adversarial_training(model, x_train, y_train, method=DEFENSES.meta(name)["method"],
                                threat=threat, x_val=ds.x_test, y_val=ds.y_test, schedule=schedule, **common,
                                **params, **keep)


def attack_specs(attacks: tuple[AttackConfig, ...], default_eps: tuple[str, ...]) -> list[AttackSpec]:
    """AttackConfig entries -> AttackSpec with parsed epsilons."""
    specs = []
    for a in attacks:
        eps = tuple(parse_eps(e) for e in (a.eps or default_eps))
        specs.append(AttackSpec(a.name, a.norm, eps, dict(a.params), a.targeted, a.target, a.label))
    labels = [s.label for s in specs]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise ConfigError(f"two attacks share the label {dupes[0]!r}; give each a distinct label")
    return specs


def audit_record(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: Config, device: str,
                 context: dict[str, Any]) -> dict[str, Any]:
    """The audit of `sparring run` as one results.jsonl record (cell "audit"). A failure of the audit
    itself is recorded (verdict "error" and the message) rather than raised: the cells are already saved."""
    from .evaluate.audit import audit
    from .threat import Norm, ThreatModel

    a = config.audit
    n = min(a.n or len(y), len(y))
    labels = a.eps or config.evaluate.eps
    eps = {label: parse_eps(label)[1] for label in labels}
    base = {"kind": "audit", "cell": "audit", **context, "norm": a.norm, "n": n, "eps_labels": list(eps)}
    tick = time.perf_counter()
    try:
        threat = ThreatModel(Norm.parse(a.norm), max(eps.values()))
        report = audit(model.to(device), x[:n].to(device), y[:n].to(device), threat=threat, eps=list(eps.values()),
                       steps=a.steps, restarts=a.restarts, square_queries=a.square_queries, seed=config.seed)
    except (SparringError, RuntimeError, ValueError) as exc:
        return {**base, "verdict": "error", "error": str(exc).splitlines()[0], "time_s": time.perf_counter() - tick}
    if config.evaluate.precision != "fp32":  # the cells' attacks ran in reduced precision; the audit's in fp32
        report["checks"].append({"name": "attack precision", "status": "warn", "cause": "", "fix": "",
                                 "evidence": f"the attack cells ran under {config.evaluate.precision} autocast; the "
                                             "audit's attacks ran in fp32: compare its naive numbers with the cells"})
        if report["verdict"] == "pass":
            report["verdict"] = "warn"
    back = {v: k for k, v in eps.items()}
    by_label = {k: (None if d is None else {back.get(e, f"{e:g}"): v for e, v in d.items()})
                for k, d in (("naive", report["naive"]), ("adaptive", report["adaptive"]))}
    return {**base, "verdict": report["verdict"], "checks": report["checks"], **by_label,
            "changes": report["changes"], "time_s": time.perf_counter() - tick}


def matrix(config: Config) -> list[tuple[Any, str, Any, str]]:
    """The (model, model label, variant, cell prefix) units of a config: [[models]] (else [model]) x
    [[variants]] (else the one [[defenses]] chain). A single unit keeps the plain cell keys ("clean",
    "pgd|linf|0.1"); in a matrix each key starts with "model|variant|"."""
    from .config import VariantConfig

    models = list(config.models) or [config.model]
    variants = list(config.variants) or [VariantConfig("+".join(d.name for d in config.defenses) or "none",
                                                        config.defenses)]
    single = len(models) * len(variants) == 1
    labelled = [(m, getattr(m, "label", "") or m.arch) for m in models]
    return [(m, label, v, "" if single else f"{label}|{v.name}|") for m, label in labelled for v in variants]


class _Prefixed:
    """A RunStore seen by one matrix unit: cell keys carry the unit's prefix on disk, not in the runner."""

    def __init__(self, store: RunStore, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    def done(self) -> dict[str, dict[str, Any]]:
        n = len(self.prefix)
        return {k[n:]: {**v, "cell": k[n:]} for k, v in self.store.done().items() if k.startswith(self.prefix)}

    def append(self, record: dict[str, Any]) -> None:
        self.store.append({**record, "cell": self.prefix + record["cell"]})


LATENT_POINTS = 500


def latent_record(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, seed: int, device: str,
                  out: Path, name: str, context: dict[str, Any]) -> dict[str, Any]:
    """2-D PCA of the latent space (the 1-NN's layer for a contrastive model, else the input of the last
    Linear) for the first LATENT_POINTS images, clean and attacked by `spec` at its first eps; the
    coordinates go to out/name (tensors; the first untargeted budget attack of the run), the record names the file and the mean latent displacement."""
    from .attacks import ATTACKS
    from .defenses.contrastive import PENULTIMATE, latent_features, latent_view
    from .rng import SampleGenerators
    from .threat import ThreatModel

    net, layer = (model.model, model.layer) if hasattr(model, "references") else (model, PENULTIMATE)
    m = min(LATENT_POINTS, len(y))
    x, y = x[:m], y[:m]
    label, eps = spec.eps[0]
    attacked = model.for_attack() if callable(getattr(model, "for_attack", None)) else model
    x_adv = ATTACKS.get(spec.name)(attacked.to(device), x.to(device), y.to(device), threat=ThreatModel(spec.norm, eps),
                                  generator=SampleGenerators(seed, torch.arange(m)), **spec.call_kwargs()).detach().cpu()
    view = latent_view(net, layer, x, y, x_adv=x_adv, seed=seed)
    z, z_adv = latent_features(net, layer, x), latent_features(net, layer, x_adv)
    centroids = torch.stack([z[y == k].mean(0) for k in y.unique()])
    spread = float(torch.cdist(centroids, centroids).sum() / max(1, len(centroids) * (len(centroids) - 1)))
    tmp = out / f".{name}.tmp"
    torch.save({"clean": torch.as_tensor(view["clean"], dtype=torch.float32),
                "adversarial": torch.as_tensor(view["adversarial"], dtype=torch.float32), "labels": y.clone()}, tmp)
    tmp.replace(out / name)
    return {"kind": "latent", "cell": "latent", **context, "file": name, "method": "pca", "layer": str(layer),
            "n": m, "attack": spec.label, "norm": spec.norm.value, "eps": eps, "eps_label": label,
            "mean_shift": float((z_adv - z).norm(dim=1).mean()), "mean_centroid_distance": spread}


def run_experiment(config: Config, out: Path, *, progress: bool = True, log: Any = print) -> Path:
    """Train or load every model x defense variant, evaluate the attack x eps matrix on each, audit each,
    write the report; resumes in `out`."""
    from .data import load_dataset
    from .distributed import solo
    from .paths import safe_name
    from .report import write_report

    _, dist, device = join_job(config.device)  # under torchrun: rank 0 writes, every rank attacks a shard
    if not dist.main:
        progress, log = False, (lambda *a, **k: None)
    store = RunStore(out)
    if dist.main:
        store.open(dump_toml(config))
    dist.barrier()
    specs = attack_specs(config.attacks, config.evaluate.eps)
    plans = []
    for m, label, variant, prefix in matrix(config):
        defenses, recipe, threat = defense_chain([(d.name, dict(d.params), d.eps, d.norm) for d in variant.defenses])
        # a matrix unit's files: models/<suffix>.safetensors, adversarial__<suffix>/, latent__<suffix>.pt
        suffix = f"{safe_name(label)}__{safe_name(variant.name)}" if prefix else ""
        name = f"models/{suffix}.safetensors" if prefix else "model.safetensors"
        plans.append((m, label, variant, prefix, suffix, defenses, recipe, threat, out / name))
    need_train = any((not m.weights or any(d["name"] == "autoencoder" for d in defenses)) and not _finished(trained)
                     for m, _, _, _, _, defenses, _, _, trained in plans)
    ds = load_dataset(config.data.name, data_dir=config.data.data_dir or None, train=need_train)
    if config.data.train_n and ds.x_train is not None:
        if not 0 < config.data.train_n <= len(ds.y_train):
            raise ConfigError(f"data.train_n must be between 1 and {len(ds.y_train)} (0 = all), got {config.data.train_n}")
        ds = dataclasses.replace(ds, x_train=ds.x_train[:config.data.train_n], y_train=ds.y_train[:config.data.train_n])
    n = config.data.n or len(ds.y_test)
    if n < 0 or n > len(ds.y_test):
        raise ConfigError(f"data.n must be between 1 and {len(ds.y_test)} (0 = all), got {config.data.n}")
    units = []  # every model is trained (and saved) before any is attacked: the manifest names them all
    for m, label, variant, prefix, suffix, defenses, recipe, threat, trained in plans:
        def build() -> tuple[nn.Module, dict[str, Any]]:
            return _unit_model(config, ds, m, variant, defenses, recipe, threat, trained, device, progress, log)

        if dist.active and not _data_parallel(recipe, defenses):  # rank 0 trains alone, the others load its model
            if dist.main:
                with solo():
                    model, info = build()
            dist.barrier()
            if not dist.main:
                model, info = build()
        else:  # one process, or plain and adversarial training in DistributedDataParallel on every rank
            model, info = build()
        check_fits(model, ds.input_shape, ds.num_classes, ds.name)
        units.append((model, info, label, variant, prefix, suffix))
    # the report's latent-space plot (seeds/001, Fig. 8) when any variant is the contrastive defense
    contrastive = any(d["name"] == "contrastive" for plan in plans for d in plan[5])
    latent_spec = next((s for s in specs if not s.targeted and s.kind != "minimal"), None)
    manifest = {**environment(device), "seed": config.seed, "config": config.name,
                "dataset": {"name": ds.name, "sha256": ds.sha256, "source": ds.source, "n": n},
                "model": units[0][1], "classes": list(ds.classes)}
    if len(units) > 1:
        manifest["models"] = {prefix.rstrip("|"): info for _, info, _, _, prefix, _ in units}
    if dist.active:
        manifest["processes"] = dist.world
    if dist.main:
        store.write_manifest(manifest)
    for model, info, label, variant, prefix, suffix in units:
        context = {"model": label, "dataset": ds.name, "defense": variant.name}
        unit = _Prefixed(store, prefix)
        where = f" ({label} / {variant.name})" if prefix else ""
        gallery = out / ("adversarial" + (f"__{suffix}" if suffix else ""))
        log(f"evaluating {len(specs)} attacks on {n} {ds.name} test images{where}")
        evaluate(model, ds.x_test[:n], ds.y_test[:n], specs, seed=config.seed, batch_size=config.evaluate.batch_size,
                 device=device, context=context, done=unit.done(), on_record=unit.append, gallery_dir=gallery,
                 gallery_size=config.evaluate.gallery, dist=dist, precision=config.evaluate.precision)
        if not dist.main:  # the audit and the latent plot run on rank 0 alone
            continue
        if config.audit.enabled and "audit" not in unit.done():
            log(f"auditing the evaluation for gradient masking{where}")
            unit.append(audit_record(model, ds.x_test[:n], ds.y_test[:n], config, device, context))
        if contrastive and latent_spec is not None and "latent" not in unit.done():
            log(f"projecting the latent space{where}")
            unit.append(latent_record(model, ds.x_test[:n], ds.y_test[:n], latent_spec, config.seed, device, out,
                                      f"latent{f'__{suffix}' if suffix else ''}.pt", context))
    if dist.main:
        write_report(out)
    return out


DATA_PARALLEL = {"fgsm-at", "fgsm-rs-at", "pgd-at", "trades", "ensemble-at"}


def _data_parallel(recipe: dict[str, Any] | None, defenses: list[dict[str, Any]]) -> bool:
    """Whether a unit trains in DistributedDataParallel under torchrun: plain training and the
    adversarial-training recipes (tested against one process); not distillation, contrastive,
    smoothing's noise training or the autoencoder."""
    return (recipe is None or recipe["name"] in DATA_PARALLEL) and not any(d["name"] == "autoencoder" for d in defenses)


def _finished(trained: Path) -> bool:
    """A unit's model file without a training state beside it is final (while training, every per-epoch
    weights file has a newer state beside it, removed once the final model is saved)."""
    from .checkpoint import state_path

    return trained.exists() and not state_path(trained).exists()


def _unit_model(config: Config, ds: Any, m: Any, variant: Any, defenses: list[dict[str, Any]], recipe: Any,
                threat: Any, trained: Path, device: str, progress: bool, log: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The deployed model of one matrix unit: loaded when trained earlier in this run, else loaded from its
    weights (training the defense parts it needs) or trained here, and saved to `trained`.

    Training keeps its state in `trained`'s <stem>.train-state.pt after every epoch and resumes from it (on
    every rank of a DistributedDataParallel unit); the file is removed once the final model is saved, so
    `trained` without it is a finished model (a per-epoch weights file always has a newer state beside it)."""
    from .checkpoint import discard
    from .defenses.build import apply_defenses, network_and_parts
    from .distributed import current
    from .models import load_model, save_model
    from .precision import training_options

    meta = {"dataset": ds.name, "classes": list(ds.classes)}
    chain = [{k: v for k, v in d.items() if k != "kind"} for d in defenses]
    if _finished(trained):  # trained (or given its trained defense parts) earlier in this run
        model, saved = load_model(trained)  # the saved meta rebuilds the deployed defenses
        log(f"loaded the model trained earlier in this run: {trained}")
        return model, {"arch": m.arch, "weights": str(trained), "trained_here": True, "history": saved.get("history")}
    trained.parent.mkdir(parents=True, exist_ok=True)
    if m.weights:
        if recipe is not None:
            raise ConfigError(f"defense {recipe['name']!r} trains the model: leave model.weights empty, got "
                              f"{m.weights!r}")
        model, info = resolve_model(m.arch, m.weights, dataset=ds)
        if chain:
            net, parts = network_and_parts(model)
            chain = list(info.get("meta", {}).get("defense", [])) + chain
            histories = train_parts(chain, ds, parts, seed=config.seed, device=device, progress=progress, log=log)
            model = apply_defenses(net, chain, parts)
            if histories and current().main:
                save_model(net, trained, meta={**meta, "history": histories, "defense": chain}, parts=parts)
        return model, info
    model, info = resolve_model(m.arch, dataset=ds, seed=config.seed)
    parts: dict[str, Any] = {}
    histories = train_parts(chain, ds, parts, seed=config.seed, device=device, progress=progress, log=log)
    model = apply_defenses(model, chain, parts)
    t = config.train
    epochs = variant.epochs or t.epochs
    how = f" with {recipe['name']}" if recipe else ""
    log(f"training {m.arch}{how} on {ds.name} ({len(ds.y_train)} images, {epochs} epochs)")
    tick = time.perf_counter()
    with training_options(precision=t.precision, channels_last=t.channels_last, compile=t.compile):
        model, history = train_defended(model, ds, recipe, threat, schedule=t.schedule, epochs=epochs,
                                        batch_size=t.batch_size, optimizer=t.optimizer, lr=t.lr, momentum=t.momentum,
                                        weight_decay=t.weight_decay, augment=t.augment, seed=config.seed,
                                        device=device, progress=progress, log=log, checkpoint=trained, resume=True)
    info.update(trained_here=True, train_time_s=time.perf_counter() - tick, history=history)
    net, parts = network_and_parts(model)
    if current().main:  # under torchrun every rank trained its share; rank 0 saves
        save_model(net, trained, meta={**meta, "history": {**histories, "model": history} if histories else history,
                                       "defense": chain}, parts=parts)
        discard(trained, weights=False)  # the state file (and a teacher's checkpoint): `trained` is final now
    return model, info
