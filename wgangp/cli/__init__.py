"""The console scripts: wgangp-train, wgangp-sample, wgangp-eval, wgangp-sweep-report."""
