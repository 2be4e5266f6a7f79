"""The one table writer every bench report uses (bench/lib/markdown.py)."""

from bench.lib import markdown


def test_table_aligns_figures_right_and_text_left():
    text = markdown.table(["name", "req/s", "p99 ms", "note"], [["a", "1", "2", "x"]], text_from=3)
    assert (
        text == "| name | req/s | p99 ms | note |\n| --- | ---: | ---: | --- |\n| a | 1 | 2 | x |\n"
    )


def test_table_escapes_a_pipe_inside_a_cell():
    assert "| `GET /a \\| b` |" in markdown.table(["endpoint"], [["`GET /a | b`"]])


def test_facts_and_counts_are_all_text_and_all_figures():
    assert (
        markdown.facts({"CPU": "x", "cores": 2})
        == "|  |  |\n| --- | --- |\n| CPU | x |\n| cores | 2 |\n"
    )
    assert markdown.counts({"users": 1000}) == "| users |\n| ---: |\n| 1,000 |\n"


def test_figure_and_tally():
    assert markdown.figure(None) == "n/a"
    assert markdown.figure(0.1234, ".1%") == "12.3%"
    assert markdown.tally([("shed", 1234), ("deadline", 5)]) == "1,234 x shed, 5 x deadline"
