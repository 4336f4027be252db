"""train.py's command line: jetson-inference's flags, plus what medical data and CPUs need.

The defaults are TrainConfig's (train/config.py), so the command line and code that builds a
config directly agree; the parsed arguments become a TrainConfig once, in train/main.py.
"""
from __future__ import annotations

import argparse

from cxr_jetson.core.cli import add_bool_flag
from cxr_jetson.core.preprocess import EQUALIZATIONS
from cxr_jetson.networks.architectures import ARCHITECTURES
from cxr_jetson.train.augment import AUGMENTATIONS
from cxr_jetson.train.config import TrainConfig
from cxr_jetson.train.hardware import AMP_CHOICES
from cxr_jetson.train.optim import OPTIMIZERS, SCHEDULERS

SELECT_METRICS = ("auc", "balanced_accuracy", "accuracy", "loss")
DEFAULTS = TrainConfig(data="")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a chest X-ray classifier (ResNet-18 by default) the jetson-inference way.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", metavar="DIR", help="data set root holding train/<CLASS>/ and val/<CLASS>/")
    parser.add_argument("--model-dir", default=DEFAULTS.model_dir,
                        help="where checkpoints, labels.txt and reports are written")
    parser.add_argument("-a", "--arch", default=DEFAULTS.arch, help=f"architecture: {', '.join(ARCHITECTURES)}")
    parser.add_argument("--resolution", type=int, default=DEFAULTS.resolution,
                        help="network input is RESOLUTION x RESOLUTION (default: the architecture's: 224, "
                             "299 for xception, 128 for compact_cnn)")
    parser.add_argument("--equalize", choices=EQUALIZATIONS, default=DEFAULTS.equalize,
                        help="per-image equalisation, part of the preprocessing the device repeats (saved in the "
                             "checkpoint and the ONNX): hist (global histogram equalisation: every image gets the "
                             "same grey-level spread, whatever the exposure, contrast or gamma of its machine), "
                             "clahe (local contrast only) or none (the ONNX then also runs in jetson-inference's "
                             "imagenet.py, which does not equalise)")
    parser.add_argument("--augment", choices=sorted(AUGMENTATIONS), default=DEFAULTS.augment,
                        help="augmentation preset (train/augment.py): strong adds wide zoom, rotation, contrast, "
                             "gamma, blur and noise, so the model does not learn one site's look")
    parser.add_argument("-j", "--workers", type=int, default=DEFAULTS.workers,
                        help="threads that decode images into the cache")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="total epochs")
    parser.add_argument("-b", "--batch-size", type=int, default=DEFAULTS.batch_size, help="images per step")
    parser.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=DEFAULTS.lr,
                        help="initial learning rate (of the head, when the backbone has its own); default: 0.01 "
                             "per 32 images of global batch (batch size x torchrun processes)")
    parser.add_argument("--warmup-epochs", type=int, default=DEFAULTS.warmup_epochs,
                        help="linear warm-up from 10%% of --lr (cosine and step schedules); default: 2 when the "
                             "global batch is above 32, else 0")
    parser.add_argument("--momentum", type=float, default=DEFAULTS.momentum, help="SGD momentum")
    parser.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=DEFAULTS.weight_decay, help="weight decay")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS.optimizer, help="optimizer")
    parser.add_argument("--scheduler", choices=SCHEDULERS, default=DEFAULTS.scheduler,
                        help="learning-rate schedule: cosine to zero over --epochs, step (x --gamma every "
                             "--step-size epochs, jetson-inference's), onecycle, or plateau (x --gamma after "
                             "--plateau-patience epochs without a better --select-metric)")
    parser.add_argument("--step-size", type=int, default=DEFAULTS.step_size, help="step schedule: epochs between decays")
    parser.add_argument("--gamma", type=float, default=DEFAULTS.gamma, help="step and plateau schedules: decay factor")
    parser.add_argument("--plateau-patience", type=int, default=DEFAULTS.plateau_patience, help="plateau schedule: epochs to wait")
    parser.add_argument("--early-stop", type=int, default=DEFAULTS.early_stop, metavar="PATIENCE",
                        help="stop after PATIENCE epochs without a better --select-metric (0: never)")
    parser.add_argument("--label-smoothing", type=float, default=DEFAULTS.label_smoothing, help="label smoothing of the loss")
    parser.add_argument("--mixup", type=float, default=DEFAULTS.mixup, metavar="ALPHA",
                        help="mixup (Zhang et al., 2018): train on pairs of augmented images blended with a weight "
                             "drawn from Beta(ALPHA, ALPHA), the loss blended alike (0: off, the default)")
    finetune = parser.add_argument_group("fine-tuning")
    finetune.add_argument("--head-dropout", type=float, default=DEFAULTS.head_dropout, help="dropout before the new linear head")
    finetune.add_argument("--freeze-backbone", action="store_true", help="train the head only")
    finetune.add_argument("--unfreeze-at", type=int, default=DEFAULTS.unfreeze_at, metavar="EPOCH",
                          help="train the head only until EPOCH, then everything")
    finetune.add_argument("--backbone-lr-scale", type=float, default=DEFAULTS.backbone_lr_scale,
                          help="with --unfreeze-at: the backbone's learning rate relative to --lr")
    finetune.add_argument("--train-last", type=int, default=DEFAULTS.train_last, metavar="N",
                          help="train only the last N parameter blocks (layers with weights)")
    parser.add_argument("-p", "--print-freq", type=int, default=DEFAULTS.print_freq,
                        help="print a batch line every N batches (0: progress bar only)")
    parser.add_argument("--resume", default=DEFAULTS.resume, metavar="PATH",
                        help="checkpoint (or model dir) to resume from: model, optimizer, scheduler, epoch, "
                             "RNG state and best metric are restored")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in a --model-dir that already holds a trained model, replacing it "
                             "(without it, such a run is refused: --resume continues it)")
    parser.add_argument("-e", "--evaluate", action="store_true",
                        help="only evaluate a checkpoint (--resume, default MODEL_DIR/model_best.pth.tar) on --split")
    parser.add_argument("--split", default=DEFAULTS.split,
                        help="split folder under DIR that --evaluate scores (val, test, train, ...)")
    add_bool_flag(parser, "pretrained", DEFAULTS.pretrained,
                  "start from ImageNet weights, downloaded by torchvision; --no-pretrained trains from scratch")
    parser.add_argument("--weights", default=DEFAULTS.weights, metavar="FILE",
                        help="start from a local state dict or checkpoint instead of downloading (implies no download)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed (default: drawn and recorded)")
    jetson = parser.add_argument_group("jetson-inference's other flags (accepted as its train.py takes them)")
    jetson.add_argument("--dataset-type", choices=("folder", "nuswide", "voc"), default="folder",
                        help="folder: DIR/train/<CLASS>/ (the only layout this trainer reads)")
    jetson.add_argument("--multi-label", action="store_true", help="multi-label tagging (not supported: one class per image)")
    jetson.add_argument("--multi-label-threshold", type=float, default=0.5, help="with --multi-label only")
    jetson.add_argument("--start-epoch", type=int, default=None,
                        help="first epoch number: with --resume, the checkpoint's next one (a different number is "
                             "refused: resume is exact here), else 0")
    jetson.add_argument("--gpu", type=int, default=None, help="GPU index: the same as --device cuda:N")
    parser.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--amp", choices=AMP_CHOICES, default=DEFAULTS.amp,
                        help="mixed precision for training: auto picks bf16 on CUDA and on CPUs with native "
                             "bf16, fp16 on older GPUs, else none (evaluation is always fp32)")
    add_bool_flag(parser, "channels-last", DEFAULTS.channels_last,
                  "channels-last memory format (faster convolutions on CPU and tensor cores)")
    parser.add_argument("--class-weights", default=DEFAULTS.class_weights,
                        help="auto: loss weight n/(classes*n_c) per class, so the 3:1 pneumonia majority does "
                             "not dominate; none; or one weight per class, e.g. 1.5,0.5")
    parser.add_argument("--threshold-policy", default=DEFAULTS.threshold_policy,
                        help="how the decision threshold is chosen on validation data: sensitivity:0.96 "
                             "(default: the highest threshold that catches 96%% of positives), youden or fixed:0.5")
    add_bool_flag(parser, "robust-threshold", DEFAULTS.robust_threshold,
                  "choose the threshold and model_best on validation plus a degraded copy of it (train/shift.py), "
                  "not on in-distribution validation alone")
    add_bool_flag(parser, "recalibrate-bn", DEFAULTS.recalibrate_bn,
                  "measure model_best's batch-norm statistics again at the end on the training images as the device "
                  "sees them (unaugmented), before the threshold is settled: the running statistics of training "
                  "describe augmented images (off by default: on the shift proxies it raised sensitivity and "
                  "lowered specificity; README, accuracy at a new site)")
    add_bool_flag(parser, "calibrate", DEFAULTS.calibrate,
                  "fit a temperature to the same images at the end and fold it into model_best's last layer, so "
                  "the confidence the device shows is calibrated (decisions and AUC do not change)")
    add_bool_flag(parser, "input-gate", DEFAULTS.input_gate,
                  "fit the input gate at the end (train/input_gate.py: what the model refuses to answer for, and its "
                  "REFER band), written beside model_best and built into the ONNX; needs a real-sized data set")
    parser.add_argument("--population-age", default=DEFAULTS.population_age, metavar="LO-HI",
                        help="patient ages in years the training images span (the Kermany set's: 1-5), recorded with "
                             "the input gate: a DICOM outside them is flagged")
    parser.add_argument("--select-metric", choices=SELECT_METRICS, default=DEFAULTS.select_metric,
                        help="validation metric that picks model_best (ties: lower validation loss)")
    add_bool_flag(parser, "tensorboard", DEFAULTS.tensorboard, "log scalars to MODEL_DIR/tensorboard when tensorboard is installed")
    return parser
