"""The command line (the main group lives in the core branch; this one adds eval, finetune)."""
