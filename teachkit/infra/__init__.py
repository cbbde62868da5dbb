"""What a real run needs around the course's code; nothing here is taught.

The chapters import the course from ``teachkit``'s top level (``dino``, ``sam``, ``data``,
``models``, ``attention``, ``knn``, ...). This sub-package holds the plumbing those
modules stand on:

* ``run`` -- the run skeleton: save and resume policy, step history, recorded command,
  non-finite-loss stop; ``checkpoint`` -- atomic checkpoint files; ``loop`` -- the
  resumable step loop of the one-go trainers (autoencoder, contrastive, supervised);
* ``config_fields`` and ``config_checks`` -- dataclass fields with help text, the flags
  built from them, and the checks of their values; ``cli_checks`` -- command-line usage
  errors;
* ``tensor_checks`` -- argument checks with messages that say what was expected;
* ``hardware`` -- the one device resolver, the arithmetic (precision) for a device, and
  the hardware's name for model cards;
* ``distributed`` -- ``torchrun`` process groups; ``optim`` -- AdamW parameter groups;
  ``compile_fallback`` -- ``torch.compile`` where it works;
* ``download`` -- hashed, atomic downloads; ``weights`` -- the one strict state-dict loader.
"""
