"""Study presets (one YAML per paper cxrlab reproduces) and the study file format (:mod:`.spec`)."""
