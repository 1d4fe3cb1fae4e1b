from setuptools import setup

setup(
    name="streamlmu",
    version="0.1.0",
    description="Streaming-first neuromorphic signal processing: Legendre Memory Units, "
    "LMUFormer and spiking models as exact frame-by-frame stream operators.",
    python_requires=">=3.10",
    packages=["streamlmu", "streamlmu.nn", "streamlmu.models", "streamlmu.audio", "streamlmu.data",
              "streamlmu.train", "streamlmu.serve", "streamlmu.vision", "streamlmu.vision.caption", "streamlmu.pretrained",
              "streamlmu.kernels", "streamlmu.apps"],
    package_data={"streamlmu.pretrained": ["*.pt", "*.md", "*.json", "*.wav"], "streamlmu.serve": ["page/*"]},
    package_dir={
        "streamlmu": "streamlmu",
        "streamlmu.kernels": "kernels",
        "streamlmu.apps": "apps",
    },
    install_requires=[
        "torch>=2.4",
        "torchaudio>=2.4",
        "soundfile",
        "numpy>=1.24",
        "numba>=0.59",
        "scipy>=1.10",
        "tqdm",
        "matplotlib",
        "onnx",
        "onnxruntime",
        "openwakeword==0.4.0",
    ],
    extras_require={
        # ultralytics is AGPL-3.0: the detector stays an optional extra
        "vision": ["ultralytics==8.4.190", "torch-pruning==1.6.1", "opencv-python", "scikit-image",
                   "open_clip_torch==3.3.0", "pycocoevalcap==1.2"],
        # streamlmu serve: the WebSocket service (one process) and its scale-out
        "serve": ["fastapi==0.163.2", "uvicorn==0.54.0", "websockets==17.4", "ray[serve]==2.60.0"],
    },
    entry_points={"console_scripts": ["streamlmu=streamlmu.apps.cli:main"]},
)
