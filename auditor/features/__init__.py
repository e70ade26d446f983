"""The feature dictionary: what each SAE feature fires on, and what it promotes.

:func:`build_dictionary` runs a corpus through the project's extraction path with per-token
codes and records, per feature: activation density over tokens and documents, the maximum
and approximate quantiles of the nonzero activations, the top-activating contexts,
logit-lens tokens and an automatic label.
Builds merge incrementally and resume from their last finished chunk. The job
:func:`auditor.jobs.dictionary.run_dictionary_build` also loads the model and SAE, reads a
corpus file and records the run. :func:`load_dictionary`, :func:`feature_labels`,
:func:`describe_feature` and :func:`search_features` read it back.

See Also
--------
auditor.features.dictionary : building, merging and provenance.
auditor.features.files : the dictionary's files, manifest and verified reads.
auditor.features.checkpoint : per-chunk resume state of a build.
auditor.features.stats : the mergeable statistics (and how quantiles are approximated).
auditor.features.logit_lens : how the logit lens is computed.
auditor.features.labels : automatic labels, overrides and the optional LLM labeller.
auditor.features.detection : label quality as a detection score.
auditor.features.query : one feature's card and search.
"""

from auditor.features.detection import DetectionReport, score_dictionary, score_labels
from auditor.features.dictionary import (
    BuildSummary,
    DictionaryConfig,
    build_dictionary,
    default_dictionary_dir,
    dictionary_provenance,
    load_contexts,
    load_dictionary,
    load_manifest,
    relabel_dictionary,
)
from auditor.features.labels import (
    auto_label,
    dictionary_annotations,
    feature_labels,
    label_with_llm,
    legacy_label,
    llm_label,
    llm_labeller,
    load_label_overrides,
    save_label_override,
)
from auditor.features.logit_lens import (
    LogitLens,
    final_norm_gain,
    logit_lens,
    model_logit_lens,
    unembedding,
)
from auditor.features.query import (
    FeatureReport,
    describe_feature,
    format_feature,
    search_features,
)
from auditor.features.stats import Context, FeatureStats, merge_contexts

__all__ = [
    "BuildSummary",
    "Context",
    "DetectionReport",
    "DictionaryConfig",
    "FeatureReport",
    "FeatureStats",
    "LogitLens",
    "auto_label",
    "build_dictionary",
    "default_dictionary_dir",
    "describe_feature",
    "dictionary_annotations",
    "dictionary_provenance",
    "feature_labels",
    "final_norm_gain",
    "format_feature",
    "label_with_llm",
    "legacy_label",
    "llm_label",
    "llm_labeller",
    "load_contexts",
    "load_dictionary",
    "load_label_overrides",
    "load_manifest",
    "logit_lens",
    "merge_contexts",
    "model_logit_lens",
    "relabel_dictionary",
    "save_label_override",
    "score_dictionary",
    "score_labels",
    "search_features",
    "unembedding",
]
