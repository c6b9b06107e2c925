"""The simulated GPU cluster: a real control plane on loopback with kwok playing the GPU nodes."""
