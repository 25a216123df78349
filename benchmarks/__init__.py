"""Speed and memory benchmarks: twins against torch.nn, measured in the same run."""
