"""Installs the ``toolkit`` package. tflite-support is installed separately by the Makefile with
``--no-deps``: its protobuf<4 pin clashes with TensorFlow 2.21, and its metadata writers work without it.
So is mediapipe (tests only: an independent reader of the metadata), whose opencv-contrib-python would
replace our headless OpenCV."""

from setuptools import find_packages, setup

setup(
    name="lesion-toolkit",
    version="0.1.0",
    description="Train skin-lesion classifiers and ship them into Flutter apps as int8 TFLite bundles",
    packages=find_packages(include=["toolkit", "toolkit.*", "app_steps"]),
    package_data={
        "toolkit.export": ["templates/*"],
        "toolkit.data": ["*.js"],
        "toolkit.preview": ["web/package*.json", "web/static/*"],
    },
    python_requires=">=3.11,<3.12",
    install_requires=[
        "tensorflow-cpu==2.21.*",
        "keras>=3.10,<4",
        "ai-edge-litert>=2.0",
        "litert-quantizer>=0.11",
        "opencv-python-headless>=4.10",
        "pillow>=10",  # EXIF orientation (OpenCV decodes; its EXIF reading is not exposed)
        "scikit-learn>=1.5",
        "scipy>=1.10",  # softmax; scikit-learn depends on it anyway
        "pandas>=2.2",
        "numpy>=1.26",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    extras_require={"dev": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "import-linter==2.7", "playwright>=1.40"], "jax": ["jax[cpu]>=0.4.30"]},
    entry_points={"console_scripts": ["lesion-toolkit=toolkit.cli:main"]},
)
