"""Backend and process concerns, kept out of the maths and the model: XLA:CPU flags (`xla_cpu`), glibc malloc
settings (`malloc`), JAX's persistent compilation cache (`compile_cache`), the CPU-friendly convolution formulation
the model uses (`conv`), and signal handling for the commands (`signals`). Each is applied from here by the entry
points."""
