"""Character creation: from 3–5 face references to a trained character LoRA (issue 11).

Client-side library; nothing here talks to a server except the training driver.

- :mod:`.references` — check the face references (count, format, size, faces).
- :mod:`.trigger` — propose a rare trigger token, warn about weak ones.
- :mod:`.captions` — captions from a scene prompt and the trigger.
- :mod:`.dataset` — the bootstrap pack, image selection, curation file, ``dataset/v<N>/``.
- :mod:`.presets` — :class:`~.presets.TrainingSpec` and the chunk plan of a training.
- :mod:`.report` — the 5-shot before/after identity report.
- :mod:`.lossplot` — the loss plot picture.
- :mod:`.training`, :mod:`.state` — the training driver (posts chunks to a ComfyUI server).

Modules are imported by name (``from charpack.character.presets import TrainingSpec``); this
package imports none of them, so importing one does not pull in the others' dependencies.
"""
