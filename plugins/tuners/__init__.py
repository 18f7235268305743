"""Built-in tuners: random search, TPE, Hyperband, regularized evolution, CoDeepNEAT, Petridish."""
