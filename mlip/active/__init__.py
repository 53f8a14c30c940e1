"""Active learning tools: MaxVol / D-optimality on feature matrices (`mlip.active.maxvol`, family
agnostic) and the MTP extrapolation grade and selection (`mlip.active.grade`)."""
