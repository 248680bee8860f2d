"""The toy experiment of Figure 2: a 2-D spiral embedded in D dimensions (``jitlab fig2``)."""
