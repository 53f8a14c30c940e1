"""Active learning tools: MaxVol / D-optimality on feature matrices (`mlip.active.maxvol`, family
agnostic), the extrapolation grade and selection of every family (`mlip.active.grade`), and the
resumable loop of `mlip al` (`loop`: the stages `explore`, `select`, `label` over the run directory of
`store`, configured by `config`; its training stage is `mlip train`'s fine-tuning path)."""
