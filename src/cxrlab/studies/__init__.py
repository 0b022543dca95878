"""Study presets (one YAML per seed paper) and the study file format (:mod:`.spec`)."""
