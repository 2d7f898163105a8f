"""Training (the ``train`` extra: torch). Read in this order:

- ``loop.py``        the loop: ``train`` and ``resume``, one step after another
- ``config.py``      the run's typed config (saved as config.json): shared
                     fields, and a ``ModeConfig`` for what a mode adds
- ``modes/``         one module per mode, its config and its trainer
                     (``cyclegan.py``, ``pix2pix.py``, ``gan.py``; what the
                     image-to-image modes share in ``translation.py``) and
                     the registry ``MODES``
- ``trainer.py``     what every mode's trainer shares (networks, Adam,
                     precision, gradient averaging)
- ``losses.py``, ``pool.py``, ``schedule.py``, ``seeds.py``  the pieces of a step
- ``setup.py``       folders and flags -> config (which mode, defaults, run length)
- ``data.py``        what is in the folders, and ``load_data``: the run's data;
                     ``images.py`` decodes, ``batches.py`` plans each step's batch
- ``upkeep.py``      what happens between steps, and when: ``run.py`` (the run
                     folder, metrics.jsonl), ``checkpointing.py`` (when to
                     checkpoint, the best one), ``state.py`` (the checkpoint
                     file), ``scoring.py`` (--eval-every), ``export.py`` (ONNX
                     at the end), ``report.py`` and ``display.py`` (what a
                     person sees)
- ``device.py``, ``distributed.py``, ``allocator.py``  where and how it runs
"""
