"""The prompt templates of the paper, in one place (docs/measures.md, "Prompts"; languages: pim/data/languages.py).

Every function returns the model input with real newlines; a prompt file stores it on one line with
`pim.activation_files.escape_newlines` (the paper's `\\n` convention).

    translation_prompt   WMT v8: direct, pivot and PiM-k (code_WMT.py, code_WMT_nmt_baselines.py, code_wmt_*in_1out.py)
    nli_prompt           XNLI single and PiM "v2" (XNLI/process_xnli.py); RTE uses the same text with its two labels
    boolq_prompt         BoolQ: the project's adaptation of the NLI wording (the release has no BoolQ template)
    recover_source       the source sentence inside a released GPT-4/ChatGPT translation prompt ("vhendy")
"""
import re

# FLORES dev rows (0-based) of the demonstrations, in prompt order; a k-shot prompt takes the first k.
# Direct and pivot: random.seed(42); random.sample(all 997 pairs, k) in code_WMT.py (the drivers use k = 1, 5).
DIRECT_DEMO_ROWS = (654, 114, 25, 759, 281)
# PiM: the fixed short rows of code_wmt_*in_1out.py (the drivers use n = 1)
PIM_DEMO_ROWS = (4, 12, 137, 36, 65)

NLI_LABELS = {  # the sentence naming the labels, per label set
    "xnli": "There are three possible relationships: entailment, contradiction, or neutral.",
    "rte": "There are two possible relationships: entailment or not_entailment.",  # project adaptation
}


def translation_prompt(target, inputs, demos=()):
    """v8. inputs: [(language name, text), ...] (the source first, then the aux languages in order);
    demos: [(inputs, target text), ...] put in front, each followed by an empty line."""
    def block(pairs):
        return f"Translate into {target}.\n" + "".join(f"{name}: {text}\n" for name, text in pairs)

    return "".join(block(pairs) + f"{target}: {answer}\n\n" for pairs, answer in demos) + block(inputs) + f"{target}:"


def nli_prompt(premises, hypothesis, labels="xnli"):
    """premises: [(language name, premise), ...]. One premise: the single (direct) template, the
    language is not named. Several: PiM v2, premises in every language, the hypothesis in the first."""
    relations = NLI_LABELS[labels]
    if len(premises) == 1:
        return ("You will be presented with a pair of sentences. Your task is to determine the relationship "
                f"between these two sentences. {relations} Please provide a single prediction for the "
                "relationship based on these sentence pairs, without any explanation. Here is the sentence pair:\n"
                f"Premise: {premises[0][1]}\nHypothesis: {hypothesis}\nYour prediction:")
    main = premises[0][0]
    return (f"You will be given a premise in multiple languages ({', '.join(name for name, _ in premises)}) "
            f"and a hypothesis in {main}. Your task is to determine the relationship between the multilingual "
            f"premises and the {main} hypothesis. {relations} Please provide a single prediction for the "
            "relationship, without any explanation. Here are the premises and the hypothesis:\n\n"
            + "".join(f"{name} Premise: {text}\n" for name, text in premises)
            + f"\nHypothesis: {hypothesis}\n\nYour prediction:")


def boolq_prompt(passages, question):
    """passages: [(language name, passage), ...]; the question is in the first language. The project's
    wording, modelled on nli_prompt (single and PiM v2); the answer is True or False."""
    task = "Please answer the question with True or False, without any explanation."
    if len(passages) == 1:
        return ("You will be presented with a passage and a question about it. Your task is to answer the "
                f"question based on the passage. {task} Here are the passage and the question:\n"
                f"Passage: {passages[0][1]}\nQuestion: {question}\nYour answer:")
    main = passages[0][0]
    return (f"You will be given a passage in multiple languages ({', '.join(name for name, _ in passages)}) "
            f"and a question in {main}. Your task is to answer the {main} question based on the multilingual "
            f"passages. {task} Here are the passages and the question:\n\n"
            + "".join(f"{name} Passage: {text}\n" for name, text in passages)
            + f"\nQuestion: {question}\n\nYour answer:")


_VHENDY = re.compile(r"^Translate this into 1\. ([^:]+):\\n")


def recover_source(line):
    """(target language name, source text) of one released translation prompt line, which reads
    `Translate this into 1. {T}:\\n{demo}\\n1. {demo translation}\\nTranslate this into 1. {T}:\\n{source}\\n1.`
    with literal backslash-n. ValueError if the line has another shape."""
    m = _VHENDY.match(line)
    if not m:
        raise ValueError("does not start with 'Translate this into 1. <Language>:\\n'")
    marker = f"\\nTranslate this into 1. {m[1]}:\\n"
    if line.count("Translate this into 1.") != 2 or marker not in line:
        raise ValueError("expected exactly one demonstration and one item ('Translate this into 1.' twice)")
    source = line.rsplit(marker, 1)[1]
    if not source.endswith("\\n1."):
        raise ValueError("does not end with '\\n1.'")
    return m[1], source[:-len("\\n1.")].strip()
