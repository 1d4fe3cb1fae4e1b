"""The building blocks of sparse continual learning (SparCL, DER++): networks, masks, reservoir, forgetting."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from streamlmu.vision.backbones import ResNet18, SmallCNN
from streamlmu.vision.forgetting import forgetting_init, least_forgotten, record
from streamlmu.vision.rehearsal import balanced_fill, derpp_loss, empty_buffer, filled, replay, reservoir_add
from streamlmu.vision.sparse_training import gradient_mask, magnitude_mask, prune_and_regrow, sparsity


def test_networks_give_logits_and_name_the_convolutions_sparse_training_masks():
    resnet, cnn = ResNet18(10, width=8), SmallCNN(4, width=8, channels=1)
    assert resnet(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert cnn(torch.randn(2, 1, 16, 16)).shape == (2, 4)
    for model, count in ((resnet, 16), (cnn, 2)):
        params = dict(model.named_parameters())
        names = model.masked_weights()
        assert len(names) == count and all(params[n].dim() == 4 and params[n].shape[-1] == 3 for n in names)
    assert "stem.0.weight" not in resnet.masked_weights()  # the stem, shortcuts and classifier stay dense
    with pytest.raises(ValueError, match="classes and width"):
        ResNet18(0)


def test_magnitude_mask_keeps_the_largest_weights():
    weight = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    mask = magnitude_mask(weight, 0.75)
    assert int(mask.sum()) == weight.numel() // 4
    assert weight.abs()[mask].min() > weight.abs()[~mask].max()
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        magnitude_mask(weight, 1.0)


def test_prune_and_regrow_keeps_the_important_weights_and_the_target_sparsity():
    g = torch.Generator().manual_seed(1)
    weight, grad = torch.randn(32, 16, 3, 3, generator=g), torch.randn(32, 16, 3, 3, generator=g)
    n = weight.numel()
    score = weight.abs() + 0.5 * grad.abs()
    mask = prune_and_regrow(weight, grad, 0.75, extra=0.01, generator=torch.Generator().manual_seed(2))
    assert sparsity([mask]) == pytest.approx(0.75, abs=0.5 / n)
    important = magnitude_mask(score, 0.76)  # the top 24 % by |w| + 0.5 |grad|
    assert bool(mask[important].all())
    regrown = mask & ~important
    assert int(regrown.sum()) == int(mask.sum()) - int(important.sum()) > 0
    assert score[regrown].mean() < score[important].mean()  # random picks among the rest, not the next best
    again = prune_and_regrow(weight, grad, 0.75, extra=0.01, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(again, mask) and torch.equal(again & important, important)
    assert torch.equal(prune_and_regrow(weight, grad, 0.75, extra=0.0), magnitude_mask(score, 0.75))
    assert torch.equal(prune_and_regrow(weight, None, 0.75, extra=0.0), magnitude_mask(weight, 0.75))


def test_gradient_mask_thins_only_the_kept_weights_gradients():
    g = torch.Generator().manual_seed(4)
    weight, grad = torch.randn(64, 32, 3, 3, generator=g), torch.randn(64, 32, 3, 3, generator=g)
    kept = magnitude_mask(weight, 0.5)
    mask = gradient_mask(grad, kept, 0.8)
    assert bool((mask <= kept).all())  # never a pruned weight's gradient
    assert 1 - sparsity([mask]) == pytest.approx(0.2, abs=0.01)  # the 80th percentile over every entry
    assert grad.abs()[mask].min() >= grad.abs()[kept & ~mask].max()
    # a layer already sparser than the percentile keeps every gradient of its kept weights
    assert torch.equal(gradient_mask(grad, magnitude_mask(weight, 0.9), 0.8), magnitude_mask(weight, 0.9))
    with pytest.raises(ValueError, match="percentile"):
        gradient_mask(grad, kept, 80)


def _offer(buffer, first, count, generator):
    labels = torch.arange(first, first + count)
    return reservoir_add(buffer, labels.float().view(-1, 1, 1, 1), labels, torch.zeros(count, 3), 0, generator)


def test_reservoir_fills_in_order_then_keeps_a_uniform_sample():
    g = torch.Generator().manual_seed(5)
    buffer = empty_buffer(8, (1, 1, 1), 3)
    first = _offer(buffer, 0, 5, g)
    assert filled(buffer) == 0 and int(buffer.seen) == 0  # the state given is untouched
    assert filled(first) == 5 and first.labels[:5].tolist() == [0, 1, 2, 3, 4] and (first.labels[5:] == -1).all()
    assert sorted(replay(first, 3, g).tolist())[-1] < 5
    # 100 slots over 2000 examples, 200 times: every tenth of the stream keeps 10 % of the slots
    counts = torch.zeros(10)
    for trial in range(200):
        buffer = empty_buffer(100, (1, 1, 1), 3)
        for start in range(0, 2000, 50):
            buffer = _offer(buffer, start, 50, g)
        assert filled(buffer) == 100 and int(buffer.seen) == 2000 and buffer.labels.unique().numel() == 100
        counts += torch.bincount(buffer.labels // 200, minlength=10)
    expected = 200 * 100 / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9, counts  # chi-square, 9 degrees of freedom, p = 0.001


def test_balanced_buffer_gives_every_class_an_equal_share():
    generator = torch.Generator().manual_seed(0)
    empty = empty_buffer(10, (1, 2, 2), 4)

    def task(labels):
        ids = torch.arange(len(labels), dtype=torch.float32) + 100 * labels[0]
        return ids.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone(), labels, ids[:, None].expand(-1, 4).clone()

    first = balanced_fill(empty, *task(torch.tensor([0] * 6 + [1] * 6)), 0, generator)
    assert filled(first) == 10 and first.labels.bincount().tolist() == [5, 5] and int(empty.seen) == 0
    assert torch.equal(first.logits[:, 0], first.images[:, 0, 0, 0])  # each image keeps its logits
    assert not first.tasks.any()
    second = balanced_fill(first, *task(torch.tensor([2] * 2 + [3] * 6)), 1, generator)
    # 10 slots over four classes: class 2 has only two images, and its spare slots go to the others
    assert second.labels.bincount().tolist() == [3, 3, 2, 2] and int(second.seen) == 20
    assert set(second.images[second.labels < 2, 0, 0, 0].tolist()) <= set(first.images[:, 0, 0, 0].tolist())
    assert torch.equal(second.tasks, (second.labels >= 2).long())


def test_a_balanced_buffer_learner_fills_its_buffer_at_the_end_of_a_task():
    learner, split = _digits_learner(buffer_policy="balanced")
    state = learner.init_state()
    for batch in _batches(split, 0, steps=3):
        _, state = learner.step(batch, state)
    assert filled(state.memory) == 0  # nothing stored during the task
    images, labels = split.task(0)
    state = learner.end_task(state, images, labels)
    assert filled(state.memory) == 40 and state.memory.labels.bincount().tolist() == [20, 20]
    stored = learner.predictor(state)(state.memory.images[:, None])[0][:, 0]
    assert torch.allclose(stored, state.memory.logits, atol=1e-5)  # the logits of the network at the end
    with pytest.raises(ValueError, match="buffer_policy"):
        _digits_learner(buffer_policy="fifo")


def test_derpp_loss_adds_the_logit_and_label_replays():
    g = torch.Generator().manual_seed(6)
    logits, labels = torch.randn(4, 5, generator=g), torch.tensor([0, 1, 2, 3])
    replayed, stored = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    none = torch.zeros(0, 5)
    ce = F.cross_entropy(logits, labels)
    assert derpp_loss(logits, labels, none, none, none, labels[:0], 0.1, 0.5) == ce
    full = derpp_loss(logits, labels, replayed, stored, replayed, labels[:3], 0.1, 0.5)
    expected = ce + 0.1 * F.mse_loss(replayed, stored) + 0.5 * F.cross_entropy(replayed, labels[:3])
    assert full == pytest.approx(float(expected))


def test_forgetting_events_and_the_least_forgotten_examples():
    stats = forgetting_init(5)
    for correct in ([1, 1, 0, 0, 1], [1, 0, 0, 1, 0], [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]):
        stats = record(stats, torch.arange(5), torch.tensor(correct, dtype=torch.bool))
    assert stats.events.tolist() == [0, 2, 0, 1, 1] and stats.learnt.tolist() == [True, True, False, True, True]
    active = torch.ones(5, dtype=torch.bool)
    assert least_forgotten(stats, active, 3).tolist() == [0, 3, 4]  # never-learnt example 2 goes last
    assert least_forgotten(stats, active, 5).tolist() == [0, 3, 4, 1, 2]
    active[0] = False
    assert least_forgotten(stats, active, 1).tolist() == [3]


def test_training_flops_of_a_small_network_by_hand():
    from torch import nn

    from streamlmu.vision.train_flops import layer_macs, training_flops
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4))
    macs = layer_macs(model, torch.zeros(1, 2, 4, 4))
    # conv: 3 x 4 x 4 outputs of 2 x 3 x 3 products each; linear: 4 outputs of 48
    assert macs == {"0.weight": 48 * 18, "3.weight": 4 * 48}
    dense = training_flops(macs, samples=2)
    assert dense == 2 * 6 * (864 + 192)  # forward, input and weight gradients: three times 2 M
    sparse = training_flops(macs, 2, {"0.weight": 0.25}, {"0.weight": 0.1}, first="0.weight")
    assert sparse == pytest.approx(2 * (2 * 864 * (0.25 + 0.1) + 6 * 192))  # no input gradient for the first


def test_split_digits_are_real_digits_in_five_tasks_of_two_classes():
    from streamlmu.vision.splits import split_digits
    split = split_digits(size=16)
    images, labels = split.train
    assert images.shape[1:] == (1, 16, 16) and split.image_shape == (1, 16, 16) and split.classes == 10
    assert 0 <= images.min() and images.max() <= 1 and len(labels) + len(split.test[1]) == 1797
    assert split.tasks == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    x, y = split.task(2, "test")
    assert set(y.tolist()) == {4, 5} and len(x) == len(y)
    share = torch.bincount(split.test[1], minlength=10).float() / torch.bincount(labels, minlength=10)
    assert torch.allclose(share, torch.full((10,), 1 / 3), atol=0.02)  # a stratified quarter
    assert torch.equal(split_digits(size=16).test[1], split.test[1])


def _write_cifar(folder, classes):
    import pickle

    import numpy as np
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    key = b"labels" if classes == 10 else b"fine_labels"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if classes == 10 else ["train", "test"]
    for name in names:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), key: list(rng.integers(0, classes, 4))}
        (folder / name).write_bytes(pickle.dumps(batch))


def test_cifar_archives_in_the_official_layout_are_read(tmp_path):
    from streamlmu.vision.splits import split_cifar
    _write_cifar(tmp_path / "cifar-10-batches-py", 10)
    split = split_cifar(tmp_path)
    assert split.train[0].shape == (20, 3, 32, 32) and split.test[0].shape == (4, 3, 32, 32)
    assert len(split.tasks) == 5 and split.train[0].max() <= 1
    _write_cifar(tmp_path / "c100", 100)
    assert len(split_cifar(tmp_path / "c100", classes=100).tasks) == 10
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        split_cifar(tmp_path / "nowhere")


def _digits_learner(sparsity=0.0, **options):
    from streamlmu.vision.backbones import SmallCNN
    from streamlmu.vision.continual import ContinualConfig, ContinualLearner
    from streamlmu.vision.splits import split_digits
    split = split_digits(size=12)
    torch.manual_seed(0)
    config = ContinualConfig(sparsity=sparsity, buffer=40, lr=0.05, gradient_every=3, **options)
    return ContinualLearner(SmallCNN(10, width=8, channels=1), config, (1, 12, 12), split.tasks), split


def _batches(split, task, size=16, steps=6):
    from streamlmu.vision.continual import labelled
    images, labels = split.task(task)
    for s in range(steps):
        rows = torch.arange(s * size, (s + 1) * size) % len(labels)
        yield labelled(images[rows], labels[rows], task, rows)


def test_learner_predicts_before_it_learns_and_learns_its_task():
    learner, split = _digits_learner()
    state = learner.init_state()
    batch = next(_batches(split, 0))
    logits, after = learner.step(batch, state)
    assert torch.allclose(logits, learner.predictor(state)(batch.images[:, None])[0][:, 0], atol=1e-6)
    assert not torch.equal(after.params["classifier.weight"], state.params["classifier.weight"])
    assert int(after.steps) == 1 and int(after.memory.seen) == 16 and float(after.flops) > 0
    for epoch in range(4):
        for batch in _batches(split, 0, steps=12):
            _, after = learner.step(batch, after)
    images, labels = split.task(0, "test")
    predicted = learner.predictor(after)(images[:, None])[0][:, 0].argmax(1)
    assert (predicted == labels).float().mean() > 0.9  # zeros and ones, told apart


def test_sparse_learner_keeps_its_sparsity_and_resumes_bit_exactly(tmp_path):
    from streamlmu.stream import load_state, save_state
    from streamlmu.vision.sparse_training import sparsity
    from streamlmu.vision.forgetting import forgetting_init
    learner, split = _digits_learner(sparsity=0.75)
    state = learner.init_state()._replace(forgetting=forgetting_init(200))
    assert sparsity(state.masks) == pytest.approx(0.75, abs=0.01)
    assert all(float((state.params[n] == 0).float().mean()) >= 0.74 for n in state.masks)
    batches = list(_batches(split, 0, steps=4)) + list(_batches(split, 1, steps=4))
    for k, batch in enumerate(batches[:5]):
        _, state = learner.step(batch, state)
        if k == 2:
            state = learner.update_masks(state)
        for name, mask in state.masks.items():
            assert not state.params[name][~mask].any()  # pruned weights stay 0
            assert bool((state.gradient_masks[name] <= mask).all())
        assert sparsity(state.masks) == pytest.approx(0.75, abs=0.01)
    assert sparsity(state.gradient_masks) > 0.75  # DGM thins the kept weights' gradients too
    save_state(state, tmp_path / "learner.pt")
    resumed = load_state(tmp_path / "learner.pt")
    for batch in batches[5:]:
        _, state = learner.step(batch, state)
        _, resumed = learner.step(batch, resumed)
    for a, b in zip(state.params.values(), resumed.params.values()):
        assert torch.equal(a, b)
    assert torch.equal(state.memory.images, resumed.memory.images) and int(state.forgetting.shown.sum()) > 0


def test_joint_forward_changes_only_the_batch_that_batchnorm_sees():
    from torch import nn
    finals = {}
    for without_norm in (False, True):
        for joint in (False, True):
            learner, split = _digits_learner(joint_forward=joint)
            if without_norm:  # the same network with its BatchNorm layers taken out
                for index in (1, 4, 7):
                    learner.model.body[index] = nn.Identity()
            state = learner.init_state()
            for batch in list(_batches(split, 0, steps=4)) + list(_batches(split, 1, steps=3)):  # replays in task 1
                _, state = learner.step(batch, state)
            finals[without_norm, joint] = state.params
    for name, value in finals[True, False].items():
        assert torch.allclose(value, finals[True, True][name], atol=1e-5), name
    assert not torch.allclose(finals[False, False]["classifier.weight"], finals[False, True]["classifier.weight"],
                              atol=1e-4)


def test_shared_replay_draws_one_batch_for_both_replay_terms():
    trained = {}
    for shared in (False, True):
        learner, split = _digits_learner(shared_replay=shared)
        state = learner.init_state()
        for batch in _batches(split, 0, steps=3):
            _, state = learner.step(batch, state)
        _, after = learner.step(next(_batches(split, 1, steps=1)), state)  # 16 images and their replays
        trained[shared] = float(after.flops - state.flops), after.params
    (two, _), (one, params) = trained[False], trained[True]
    assert one / two == pytest.approx(2 / 3)  # 16 + 16 images through the network instead of 16 + 2 x 16
    assert not torch.equal(params["classifier.weight"], trained[False][1]["classifier.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_learner_on_the_gpu_learns_as_on_the_cpu():
    from streamlmu.vision.forgetting import forgetting_init
    learner, split = _digits_learner(sparsity=0.75)
    states = [learner.init_state(device=device)._replace(forgetting=forgetting_init(200)) for device in ("cpu", "cuda")]
    for batch in list(_batches(split, 0, steps=3)) + list(_batches(split, 1, steps=3)):
        states = [learner.step(batch, state)[1] for state in states]
    states = [learner.update_masks(state) for state in states]
    cpu, gpu = states
    assert gpu.params["classifier.weight"].is_cuda and gpu.memory.images.is_cuda
    for name, value in cpu.params.items():
        assert torch.allclose(value, gpu.params[name].cpu(), atol=1e-4), name
    assert torch.equal(cpu.forgetting.shown, gpu.forgetting.shown) and float(cpu.flops) == float(gpu.flops)
    logits = learner.predictor(gpu)(split.task(0, "test")[0][:8, None])[0]
    assert logits.is_cuda and logits.shape == (8, 1, 10)


def test_learner_names_bad_input_and_its_predictor_keeps_the_contract():
    from streamlmu.testing import check_stream_op
    from streamlmu.vision.continual import labelled
    learner, split = _digits_learner()
    state = learner.init_state()
    images, labels = split.task(1)
    _, state = learner.step(labelled(images[:4], labels[:4], 1), state)
    with pytest.raises(ValueError, match="images"):
        learner.step(labelled(torch.rand(4, 1, 8, 8), labels[:4], 1), state)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 10\)"):
        learner.step(labelled(images[:4], torch.tensor([0, 1, 2, 10]), 1), state)
    with pytest.raises(ValueError, match=r"labels \[0\] are not classes of task 1 \(2, 3\)"):
        learner.step(labelled(images[:4], torch.tensor([2, 3, 0, 2]), 1), state)
    with pytest.raises(ValueError, match="tasks only move forward"):
        learner.step(labelled(images[:4], labels[:4], 0), state)
    with pytest.raises(ValueError, match="empty"):
        learner.step(labelled(images[:0], labels[:0], 1), state)
    with pytest.raises(TypeError, match="Labelled"):
        learner.step(images[:4], state)
    with pytest.raises(TypeError, match="shared by the batch"):
        learner.reset(state, torch.tensor([True, False]))
    check_stream_op(learner.predictor(state), images[:6].view(2, 3, 1, 12, 12))


def test_a_task_sequence_removes_the_intended_data_and_reports_accuracy_by_task():
    from streamlmu.vision.task_sequence import Schedule, train_tasks
    learner, split = _digits_learner(sparsity=0.75)
    schedule = Schedule(epochs=3, batch=24, mask_every=1, still_epochs=1, removal=0.3, removal_steps=2,
                        removal_every=1)
    result = train_tasks(learner, split, schedule)
    sizes = [len(split.task(t)[1]) for t in range(5)]
    assert result.kept == [n - 2 * round(0.15 * n) for n in sizes]  # 30 % in two steps
    assert result.class_il.shape == (5, 5) and np.isnan(result.class_il[0, 1:]).all()
    assert not np.isnan(np.tril(result.class_il)).any() and result.final_task_il > result.final_class_il
    assert result.flops == float(result.state.flops) > 0
    first, last = np.diag(result.class_il)[:-1], result.class_il[-1, :-1]
    assert result.backward_transfer == pytest.approx(float(np.mean(last - first)))
    with pytest.raises(ValueError, match="removal"):
        train_tasks(learner, split, Schedule(removal=1.5))


def test_split_shapes_is_a_deterministic_colour_stream_of_ten_classes():
    from streamlmu.vision.shapes import SHAPE_CLASSES, split_shapes
    split = split_shapes(train_per_class=3, test_per_class=2, size=24, seed=1)
    images, labels = split.train
    assert images.shape == (30, 3, 24, 24) and split.test[0].shape == (20, 3, 24, 24) and len(SHAPE_CLASSES) == 10
    assert torch.bincount(labels).tolist() == [3] * 10 and len(split.tasks) == 5
    assert 0 <= images.min() and images.max() <= 1 and images.std(dim=(1, 2, 3)).min() > 0.02
    assert torch.equal(split_shapes(3, 2, 24, seed=1).train[0], images)
    assert not torch.equal(split_shapes(3, 2, 24, seed=2).train[0], images)


def test_continual_app_writes_a_report_and_names_bad_data(tmp_path, capsys):
    import json

    from streamlmu.apps import cli
    assert cli.main(["continual", "--data", "digits", "--method", "derpp", "--epochs", "1", "--quiet",
                     "--buffer-policy", "balanced", "--shared-replay", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["method"] == "derpp" and 0 <= report["class_il"] <= report["task_il"] <= 1
    assert report["buffer_policy"] == "balanced" and report["shared_replay"]
    assert (tmp_path / "accuracy.png").stat().st_size > 0 and "class-IL" in capsys.readouterr().out
    assert cli.main(["continual", "--data", "mnist", "--out", str(tmp_path)]) == 2
    assert "digits, shapes, cifar10:DIR or cifar100:DIR" in capsys.readouterr().err


def test_the_benchmark_runs_reduced(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "bench" / "continual.py"
    result = subprocess.run([sys.executable, str(script), "--quick", "--data", "digits"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "runs" / "bench-continual-quick" / "results.json").read_text())
    summary = report["datasets"]["digits"]["summary"]
    assert {"fine-tuning", "DER++ (dense, as avalanche's DER)", "DER++ (dense, class-masked)", "SparCL-DER++ 75%",
            "SparCL-DER++ 90%", "joint training"} <= set(summary)
    assert summary["SparCL-DER++ 90%"]["flops_vs_dense"] > summary["SparCL-DER++ 75%"]["flops_vs_dense"] > 1
    assert (tmp_path / "runs" / "bench-continual-quick" / "accuracy_digits.png").is_file()


def test_equally_forgotten_examples_leave_in_random_order():
    stats = forgetting_init(100)
    stats = record(stats, torch.arange(100), torch.ones(100, dtype=torch.bool))  # all learnt, none forgotten
    active = torch.ones(100, dtype=torch.bool)
    first = least_forgotten(stats, active, 10, torch.Generator().manual_seed(0))
    assert len(set(first.tolist())) == 10 and first.tolist() != list(range(10))
    assert torch.equal(first, least_forgotten(stats, active, 10, torch.Generator().manual_seed(0)))
