"""The epoch loop: one training epoch and one evaluation pass over cached images."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from cxr_jetson.core.preprocess import PreprocessSpec, normalize
from cxr_jetson.train.augment import AugmentConfig, augment_batch
from cxr_jetson.train.dataset import CachedSplit
from cxr_jetson.train.finetune import freeze_batch_norm_statistics

if TYPE_CHECKING:  # state.py builds runs with this module's steps_per_epoch
    from cxr_jetson.train.state import TrainingRun


@dataclass(frozen=True)
class StepSettings:
    """How every training step of a run goes; fixed for the run."""

    spec: PreprocessSpec
    augment: AugmentConfig
    device: torch.device
    batch_size: int
    amp_dtype: Optional[torch.dtype]
    channels_last: bool
    print_freq: int
    mixup: float = 0.0          # alpha of mixup's Beta(alpha, alpha); 0: off


@dataclass
class EpochStats:
    loss: float
    accuracy: float     # argmax accuracy on augmented training batches, in percent (jetson-inference)
    seconds: float
    images_per_second: float
    images: int         # trained on (a DDP job's: every rank's, DistributedSampler's padding included)


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _batch_line(epoch: int, step: int, steps: int, batch_time: float, loss: float, mean_loss: float,
                accuracy: float, mean_accuracy: float) -> str:
    width = len(str(steps))
    return (f"Epoch: [{epoch}][{step:{width}d}/{steps}]  Time {batch_time:6.3f}  "
            f"Loss {loss:.4e} ({mean_loss:.4e})  Accuracy {accuracy:7.3f} ({mean_accuracy:7.3f})")


def steps_per_epoch(images: int, batch_size: int) -> int:
    # A final batch of one would break batch norm; its image is seen next epoch in another order.
    return images // batch_size + (1 if images % batch_size > 1 else 0)


def on_training_device(split: CachedSplit, device: torch.device) -> CachedSplit:
    """``split`` with its images and labels moved once onto the training GPU when they take at most half
    of its free memory (the other half is for the model, its optimizer and activations); otherwise, and
    for any other device, as it is: each batch is then copied over through pinned memory."""
    if device.type != "cuda":
        return split
    size = split.images.numel() * split.images.element_size() + split.labels.numel() * split.labels.element_size()
    free, _ = torch.cuda.mem_get_info(device)
    if size > free // 2:
        print(f"=> {split.name} images stay in host memory: {size / 2**20:.0f} MiB is more than half of the "
              f"{free / 2**20:.0f} MiB free on {device}")
        return split
    print(f"=> {split.name} images held on {device} ({size / 2**20:.0f} MiB)")
    return dataclasses.replace(split, images=split.images.to(device), labels=split.labels.to(device))


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    if batch.device.type == device.type:
        return batch
    if device.type == "cuda":
        batch = batch.pin_memory()  # so that the copy below runs asynchronously
    return batch.to(device, non_blocking=True)


def mixup_pairs(count: int, alpha: float, generator: torch.Generator) -> Tuple[float, Optional[torch.Tensor]]:
    """Mixup's blend weight, drawn from Beta(alpha, alpha), and each image's partner (a permutation of the
    batch), both from the run's generator so that a seeded run repeats; (1.0, None) when mixup is off."""
    if alpha <= 0 or count < 2:
        return 1.0, None
    # numpy's Beta sampler, seeded from the run's generator: torch's Beta sampler takes no generator.
    seed = int(torch.randint(2**62, (1,), generator=generator))
    weight = float(np.random.default_rng(seed).beta(alpha, alpha))
    return weight, torch.randperm(count, generator=generator)


def _no_mark() -> None:
    pass


def training_step(model: nn.Module, run: "TrainingRun", images: torch.Tensor, targets: torch.Tensor,
                  settings: StepSettings, phase_done: Callable[[], None] = _no_mark) -> tuple:
    """Augment, forward, backward, update; returns the (loss, outputs) of the batch.

    ``phase_done`` is called as each of the four phases ends, so that bench/train_step.py times this very
    step rather than a copy of it.
    """
    inputs = augment_batch(images, settings.spec, settings.augment, run.generator)
    weight, partners = mixup_pairs(len(inputs), settings.mixup, run.generator)
    if partners is not None:
        partners = partners.to(inputs.device)
        inputs = weight * inputs + (1.0 - weight) * inputs[partners]
    if settings.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    phase_done()
    with _autocast(settings.device, settings.amp_dtype):
        outputs = model(inputs)
        logits = outputs.float()
        loss = run.criterion(logits, targets)
        if partners is not None:
            loss = weight * loss + (1.0 - weight) * run.criterion(logits, targets[partners])
    phase_done()
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        phase_done()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        phase_done()
        run.optimizer.step()
    run.scheduler.after_batch()
    phase_done()
    return loss.detach(), outputs


def train_one_epoch(model: nn.Module, split: CachedSplit, run: "TrainingRun", epoch: int, settings: StepSettings,
                    order: Optional[torch.Tensor] = None) -> EpochStats:
    """One pass of ``model`` (the run's model, or its DDP wrapper) over ``order`` (default: a
    permutation of the split drawn from the run's generator; under DDP this rank's shard), with the
    split's tensors on the training device or on the host."""
    model.train()
    freeze_batch_norm_statistics(model)
    device, batch_size, print_freq = settings.device, settings.batch_size, settings.print_freq
    if order is None:
        order = torch.randperm(len(split), generator=run.generator)
    order = order.to(split.images.device)
    steps = steps_per_epoch(len(order), batch_size)
    # Sums stay on the device: reading one waits for the GPU, so that happens only for a batch line,
    # the progress bar (at most once a second) and the epoch's result.
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    start = shown = time.perf_counter()
    progress = tqdm(range(steps), desc=f"epoch {epoch} train", unit="batch", leave=False, disable=None)
    for step in progress:
        step_start = time.perf_counter()
        index = order[step * batch_size:(step + 1) * batch_size]
        targets = _to_device(split.labels[index], device)
        batch_loss, outputs = training_step(model, run, _to_device(split.images[index], device), targets, settings)
        count = len(index)
        batch_correct = (outputs.argmax(1) == targets).sum()
        total_loss += batch_loss.double() * count
        total_correct += batch_correct
        seen += count
        if not progress.disable and time.perf_counter() - shown >= 1.0:
            progress.set_postfix(loss=f"{float(total_loss) / seen:.4f}", acc=f"{float(total_correct) * 100 / seen:.1f}")
            shown = time.perf_counter()
        if print_freq and (step % print_freq == 0 or step == steps - 1):
            values = (float(batch_loss), float(total_loss) / seen, float(batch_correct) * 100 / count,
                      float(total_correct) * 100 / seen)
            tqdm.write(_batch_line(epoch, step, steps, time.perf_counter() - step_start, *values))
    progress.close()
    mean_loss, accuracy = float(total_loss) / max(seen, 1), float(total_correct) * 100 / max(seen, 1)
    seconds = time.perf_counter() - start
    return EpochStats(mean_loss, accuracy, seconds, seen / max(seconds, 1e-9), seen)


@torch.inference_mode()
def predict_probabilities(model: nn.Module, split: CachedSplit, spec: PreprocessSpec, device: torch.device,
                          batch_size: int, channels_last: bool, description: str = "evaluate",
                          amp_dtype: Optional[torch.dtype] = None) -> np.ndarray:
    """Softmax probabilities for every cached image, computed in fp32 (or under ``amp_dtype`` autocast).

    The input is built by core/preprocess.py normalize, the function the device runner uses, so the fp32
    probabilities are the ones classify.py gives for the same files (tests/test_parity.py).
    """
    model.eval()
    outputs = []
    for start in tqdm(range(0, len(split), batch_size), desc=description, unit="batch", leave=False, disable=None):
        batch = normalize(split.images[start:start + batch_size].numpy(), spec)
        inputs = torch.from_numpy(batch).to(device)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp_dtype):
            logits = model(inputs)
        outputs.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(outputs).numpy()
