"""The pipeline's stages as plain functions: Config and Layout in, files declared in dvc.yaml out.

One module per DVC stage, each holding the function of the same name
(``from trackvision.stages.train import train``), so each stage in dvc.yaml depends on its own
code only and imports only what it needs. The CLI (and so DVC) calls these; tests call them
directly. Every output is written to a temporary path and renamed into place, so an interrupted
stage leaves the previous outputs intact.
"""
