"""Reading Prometheus text exposition in tests."""

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


def parse(text: str) -> dict[tuple[str, Labels], float]:
    """(sample name, labels) -> value, for every sample of every family."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """The sample's value, 0 when absent (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def family_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}
