"""Training (the ``train`` extra: torch). Read top to bottom:

- ``config.py``   the run's typed config (saved as config.json)
- ``setup.py``    folders and flags -> config (pairing decision, defaults)
- ``data.py``     decoded-once images and the batches of each step
- ``task.py``     what every mode shares; ``cyclegan.py``, ``pix2pix.py`` the modes
- ``losses.py``, ``pool.py``, ``schedule.py``, ``device.py``  the pieces of a step
- ``loop.py``     the loop: metrics, samples, checkpoints, Ctrl-C, resume, export
- ``state.py``    checkpoints (safetensors, nothing pickled)
- ``report.py``   sample grids, curves, report.html; ``display.py`` the live view
- ``distributed.py``  several processes under torchrun
- ``allocator.py``  malloc set to keep freed memory (``styler train`` sets it)
"""
