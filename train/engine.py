"""One training epoch and one evaluation pass over cached images."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from edge.preprocess import PreprocessSpec, normalize
from train.augment import AugmentConfig, augment_batch
from train.dataset import CachedSplit
from train.finetune import freeze_batch_norm_statistics


@dataclass
class EpochStats:
    loss: float
    accuracy: float     # argmax accuracy on augmented training batches, in percent (jetson-inference)
    seconds: float
    images_per_second: float


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


def train_one_epoch(model: nn.Module, split: CachedSplit, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    epoch: int, spec: PreprocessSpec, augment: AugmentConfig, generator: torch.Generator,
                    device: torch.device, batch_size: int, amp_dtype: Optional[torch.dtype],
                    scaler: Optional[Any], channels_last: bool, print_freq: int,
                    after_step: Optional[Callable[[], None]] = None) -> EpochStats:
    model.train()
    freeze_batch_norm_statistics(model)
    order = torch.randperm(len(split), generator=generator)
    steps = steps_per_epoch(len(order), batch_size)
    total_loss = total_correct = seen = 0.0
    start = time.perf_counter()
    progress = tqdm(range(steps), desc=f"epoch {epoch} train", unit="batch", leave=False, disable=None)
    for step in progress:
        step_start = time.perf_counter()
        index = order[step * batch_size:(step + 1) * batch_size]
        images = split.images[index].to(device, non_blocking=True)
        targets = split.labels[index].to(device, non_blocking=True)
        inputs = augment_batch(images, spec, augment, generator)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp_dtype):
            outputs = model(inputs)
            loss = criterion(outputs.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if after_step is not None:
            after_step()
        count = len(index)
        batch_loss = float(loss.detach())
        batch_accuracy = float((outputs.argmax(1) == targets).float().mean()) * 100
        total_loss += batch_loss * count
        total_correct += batch_accuracy * count
        seen += count
        progress.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{total_correct / seen:.1f}")
        if print_freq and (step % print_freq == 0 or step == steps - 1):
            tqdm.write(_batch_line(epoch, step, steps, time.perf_counter() - step_start, batch_loss,
                                   total_loss / seen, batch_accuracy, total_correct / seen))
    progress.close()
    seconds = time.perf_counter() - start
    return EpochStats(total_loss / max(seen, 1), total_correct / max(seen, 1), seconds, seen / max(seconds, 1e-9))


@torch.inference_mode()
def predict_probabilities(model: nn.Module, split: CachedSplit, spec: PreprocessSpec, device: torch.device,
                          batch_size: int, channels_last: bool, description: str = "evaluate") -> np.ndarray:
    """Softmax probabilities in fp32 for every cached image.

    The input is built by edge.preprocess.normalize, the function the device runner uses, so these
    probabilities are the ones classify.py gives for the same files (tests/test_parity.py).
    """
    model.eval()
    outputs = []
    for start in tqdm(range(0, len(split), batch_size), desc=description, unit="batch", leave=False, disable=None):
        batch = normalize(split.images[start:start + batch_size].numpy(), spec)
        inputs = torch.from_numpy(batch).to(device)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        outputs.append(torch.softmax(model(inputs).float(), dim=1).cpu())
    return torch.cat(outputs).numpy()
