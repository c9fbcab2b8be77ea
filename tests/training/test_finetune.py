"""Fine-tuning strategies, optimizers, gradient clipping and exact resumption of a stopped run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trackvision.errors import TrainingError
from trackvision.models.zoo import create_model
from trackvision.tracking import NullTracker
from trackvision.training.checkpoint import ResumeFile
from trackvision.training.finetune import classifier, split_parameters
from trackvision.training.loop import fit
from trackvision.training.optim import build_optimizer

from .test_loop import PRE, SETTINGS, _bright_vs_dark, _model, fit_toy

CPU = torch.device("cpu")


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _head_keys(model: torch.nn.Module) -> set[str]:
    head = {id(p) for p in classifier(model).parameters()}
    return {k for k, p in model.named_parameters() if id(p) in head}


@pytest.mark.parametrize(
    ("name", "arch", "head_type"),
    [
        ("cnn", {"width": 8, "dense": 16}, torch.nn.Linear),
        ("vit", {"patch_size": 4, "dim": 32, "depth": 1, "heads": 2}, torch.nn.Linear),
        ("mobilevit_xxs", {}, torch.nn.Linear),
        ("efficientnet_lite0", {}, torch.nn.Linear),
    ],
)
def test_the_classifier_is_found_and_the_groups_partition_the_parameters(
    name, arch, head_type
) -> None:
    model = create_model(name, num_classes=3, in_chans=3, image_size=32, arch=arch)
    head = classifier(model)
    assert isinstance(head, head_type) and head.out_features == 3
    groups = split_parameters(model)
    ids = [id(p) for p in groups.head + groups.backbone]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_linear_probe_changes_only_the_classifier() -> None:
    """Frozen means frozen: backbone weights and batch-norm statistics stay bit-identical."""
    model = _model()
    before = _snapshot(model)
    settings = SETTINGS.model_copy(update=dict(finetune="linear_probe", epochs=2, weight_decay=0.1))
    fit_toy(settings, model=model)
    after = model.state_dict()
    head = _head_keys(model)
    assert head and all(not torch.equal(before[k], after[k]) for k in head)
    frozen = [k for k in before if k not in head]
    assert any("running_mean" in k for k in frozen)
    changed = [k for k in frozen if not torch.equal(before[k], after[k])]
    assert changed == []
    assert all(p.requires_grad for p in model.parameters())  # handed back trainable


def test_gradual_trains_the_head_first_then_the_backbone_at_a_lower_rate() -> None:
    settings = SETTINGS.model_copy(update=dict(finetune="gradual", head_epochs=1, epochs=1))
    model = _model()
    before = _snapshot(model)
    fit_toy(settings, model=model)
    head = _head_keys(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k not in head)

    model = _model()
    fit_toy(settings.model_copy(update=dict(epochs=3)), model=model)
    conv = "features.0.weight"
    assert not torch.equal(before[conv], model.state_dict()[conv])
    groups = {g["name"]: g["lr"] for g in build_optimizer(model, settings).param_groups}
    assert groups == {"head": SETTINGS.lr, "backbone": pytest.approx(SETTINGS.lr * 0.1)}


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)],
)
def test_each_optimizer_is_built_and_learns(name, cls) -> None:
    settings = SETTINGS.model_copy(
        update=dict(optimizer=name, lr=0.05 if name == "sgd" else SETTINGS.lr)
    )
    assert isinstance(build_optimizer(_model(), settings), cls)
    result = fit_toy(settings, n=128)
    assert result.best_val_accuracy >= 0.85, result.history


def test_gradient_clipping_bounds_the_step() -> None:
    """One SGD step with clipping at c moves the weights by at most lr * (1 + momentum) * c."""
    n = 32
    settings = SETTINGS.model_copy(
        update=dict(optimizer="sgd", lr=1.0, epochs=1, batch_size=n, warmup_epochs=0)
    )
    moves = {}
    for clip in (0.0, 1e-3):
        model = _model()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        fit(
            model,
            _bright_vs_dark(n, 0),
            _bright_vs_dark(8, 1),
            settings.model_copy(update=dict(grad_clip=clip)),
            PRE,
            CPU,
        )
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        moves[clip] = (after - before).norm().item()
    assert moves[1e-3] <= 1.0 * 1.9 * 1e-3 + 1e-6
    assert moves[0.0] > 100 * moves[1e-3]


def test_fp16_on_a_cpu_is_refused_with_the_alternative() -> None:
    settings = SETTINGS.model_copy(update=dict(precision="fp16"))
    with pytest.raises(TrainingError, match=r"fp16 needs a CUDA device.*bf16"):
        fit(_model(), _bright_vs_dark(32, 0), _bright_vs_dark(8, 1), settings, PRE, CPU)


class _StopAt(NullTracker):
    """A tracker that raises KeyboardInterrupt when epoch ``stop`` reports (as Ctrl-C would)."""

    run_id = "run-123"

    def __init__(self, stop: int) -> None:
        self.stop = stop

    def log_metrics(self, metrics, step=None) -> None:
        if step == self.stop:
            raise KeyboardInterrupt


def test_a_stopped_run_resumes_exactly(tmp_path) -> None:
    """Stop in epoch 3 of 4 with dropout and augmentation on; resuming ends bit-identical."""
    settings = SETTINGS.model_copy(update=dict(shift=2, hflip=True))
    train, val = _bright_vs_dark(96, 0), _bright_vs_dark(32, 1)
    straight = _model()
    reference = fit(straight, train, val, settings, PRE, CPU)

    resume = ResumeFile(tmp_path / "state.pt", "fp-1")
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), train, val, settings, PRE, CPU, _StopAt(3), resume)
    saved = resume.load()
    assert saved is not None and saved["epoch"] == 2 and saved["run_id"] == "run-123"

    torch.manual_seed(99)  # a new process: fresh weights and global RNG, all restored from disk
    resumed_model = create_model(
        "cnn", num_classes=2, in_chans=1, image_size=16, arch={"width": 8, "dense": 16}
    )
    resumed = fit(resumed_model, train, val, settings, PRE, CPU, None, resume)

    def timeless(history):
        return [{k: v for k, v in row.items() if k != "images_per_s"} for row in history]

    assert timeless(resumed.history) == timeless(reference.history)
    assert resumed.best_epoch == reference.best_epoch
    for key, value in reference.best_state.items():
        assert torch.equal(value, resumed.best_state[key]), key
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key


def test_a_state_saved_for_other_settings_is_ignored(tmp_path) -> None:
    path = tmp_path / "state.pt"
    fit(
        _model(),
        _bright_vs_dark(32, 0),
        _bright_vs_dark(8, 1),
        SETTINGS.model_copy(update=dict(epochs=1)),
        PRE,
        CPU,
        None,
        ResumeFile(path, "old"),
    )
    assert ResumeFile(path, "old").load() is not None
    assert ResumeFile(path, "new").load() is None
    path.write_bytes(b"not a torch file")
    assert ResumeFile(path, "old").load() is None


def test_a_state_file_is_never_unpickled(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "state.pt"
    torch.save({"fingerprint": "x", "payload": Evil()}, path)
    assert ResumeFile(path, "x").load() is None  # weights_only refuses it; we start afresh


def test_stratified_subset_keeps_each_class_share() -> None:
    from trackvision.data.splits import stratified_subset

    labels = np.array([0] * 60 + [1] * 40)
    keep = stratified_subset(labels, 0.25, seed=3)
    assert np.bincount(labels[keep]).tolist() == [15, 10]
    assert np.array_equal(keep, stratified_subset(labels, 0.25, seed=3))
    assert len(stratified_subset(labels, 1.0, 0)) == 100
