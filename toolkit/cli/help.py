"""Help texts of the flags made from the option dataclasses, by field name (:mod:`.flags` reads them)."""

from __future__ import annotations

from toolkit.model.backbones import BACKBONES

TRAIN_HELP = {
    "arch": "backbone: " + ", ".join(BACKBONES),
    "alpha": "MobileNetV2 width: " + ", ".join(map(str, BACKBONES["mobilenet_v2"].alphas)),
    "input_size": "square input size; 0: the backbone's (64 with --demo)",
    "weights": "imagenet, none, or a weights file",
    "resize_mode": "squash to the square, or pad to it",
    "boundary": "fine-tune from a named block (block_3, block_13, block_16, conv5), all, or the last N layers; "
    "default: the backbone's",
    "schedule": "plateau: cut the learning rate when val loss stalls; cosine: one-epoch warm-up, then cosine to 0",
    "weight_decay": "adamw only",
    "imbalance": "class weights in the loss, drawing images by those weights (oversample), the log prior added to "
    "the logits in the loss, or none",
    "class_weight_power": "power of the balanced class weights, for class_weight and oversample; 0.5: square root",
    "mixup": "fine-tune mixup, Beta(ALPHA, ALPHA); 0.2 is usual, 0 is off",
    "augment_head": "augment the head phase too (it then runs the backbone each step instead of caching its output)",
    "bn_fix": "ablation only: BatchNorm trains",
    "views": "average the logits of this many mirror views inside the model once trained (1, 2 or 4): the int8 "
    "model then agrees more with the float one, at that many times the latency",
    "decision": "after training: shift the class priors to maximise this metric on val, then fit a temperature",
    "patience": "early-stopping patience in epochs",
    "average_last": "also try the mean weights of the last N fine-tune epochs; kept if val balanced accuracy is higher",
    "keep_average": "keep that mean whatever val says: the best epoch's val score is a maximum that flatters it",
    "ema": "validate, checkpoint and keep a moving average of the fine-tune's weights with this momentum "
    "(0.999: about the last 1000 steps); 0: off",
    "progressive_size": "progressive resizing: fine-tune first at this smaller size, then at the input size; 0: off",
    "progressive_epochs": "how many of the fine-tune epochs run at --progressive-size",
    "finetune_seed": "another draw of the fine-tune's batches (order, augmentation, mixup) over the same split and "
    "head phase: runs that differ only in it can be averaged by `soup`; 0: the default draw",
    "limit": "at most N images per split, stratified; 0: all",
    "devices": "all, or N local devices to train on data-parallel (JAX only); --batch-size is the global batch",
    "val": "share of lesions for validation",
    "test": "share of lesions for test",
}
EXPORT_HELP = {
    "run": "run folder (default: the newest finished run under runs/)",
    "out": "parent folder of the bundle",
    "name": "bundle folder name (default: the run's name)",
    "calibration_images": "int8: class-stratified, from train",
    "seed": "seed of the calibration sample",
    "labels": "label file, one per line in output order",
    "licence": "default: the training data's licence",
    "force": "replace an existing bundle",
    "drift_split": "split the gate runs on",
    "accept_drift": "publish the bundle even if the gate fails",
    "selective": "int8 failing the gate: retry with more calibration, then with the worst layers in float",
}
QUANTIZATION_HELP = {
    "io": "int8 only: input and output dtype; default uint8 (tflite), int8 (litert)",
    "backend": "int8 back end",
    "allow_float_ops": "int8: accept ops that stay float",
    "bias_correction": "int8: convert the kernels as they are, without cancelling their rounding shift (to compare)",
}
BENCH_HELP = {
    "threads": "thread counts, comma-separated",
    "runs": "timed runs per bundle and thread count",
    "warmup": "untimed runs first",
    "images": "folder of images to feed (default: random bytes)",
    "xnnpack": "the builtin kernels instead of XNNPACK",
    "json": "also write the report as JSON here",
    "adb": "run benchmark_model on an Android device over adb",
    "serial": "adb device serial (default: the only device)",
    "benchmark_binary": "TensorFlow Lite benchmark_model built for the device",
    "gpu": "--adb: the GPU delegate",
    "nnapi": "--adb: the NNAPI delegate",
    "import_file": "timings a Flutter app wrote (JSON lines)",
}
GATE_HELP = {
    "min_agreement": "top-1 agreement with the float reference",
    "max_balanced_accuracy_drop": "in points",
    "max_recall_drop": "per class, in points",
    "max_sensitivity_drop": "referral sensitivity change per operating point, in points",
}
