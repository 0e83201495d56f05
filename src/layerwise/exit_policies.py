"""Deprecated: ``layerwise.exit_policies`` moved to ``layerwise.inference.policies``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.inference.policies': ['Decision', 'ExitPolicy', 'ConfidencePolicy', 'EntropyPolicy',
                                  'PatiencePolicy', 'POLICIES', 'make_policy']})
