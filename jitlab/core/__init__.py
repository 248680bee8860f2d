"""Layer core: the paper's objects (the flow of Table 1, samplers, backbones, data). Imports only jitlab's base."""
