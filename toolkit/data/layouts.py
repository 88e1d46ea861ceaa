"""The dataset layouts the data layer reads and the split it makes, with their defaults, in one place.

Kept free of pandas and OpenCV, so that the CLI offers these as choices and defaults without loading them.
"""

LAYOUTS = ("auto", "ham10000", "dermamnist", "folders", "manifest")
SPLITS = ("train", "val", "test")
VAL_SHARE = 0.15  # of lesions, for validation
TEST_SHARE = 0.15  # of lesions, for test
SPLIT_SEED = 0
NPZ_SIZES = (28, 64, 128, 224)  # the image sizes MedMNIST publishes DermaMNIST at
