"""Live scoring: type a prompt, feedback and response, score them with a model, see the heatmap."""

import importlib
import importlib.util

import streamlit as st

from creditlens import viz
from creditlens.app import common

LIVE_ID = "live-0"


def unavailable(error: object) -> None:
    st.warning(f"Live scoring needs `creditlens.scoring` and `creditlens.models`, which could not be imported "
               f"({error}). The other pages work without them.")
    st.stop()


@st.cache_resource(show_spinner="Loading the model...")
def load_scorer(name: str):
    """The model and a Scorer; the scoring modules (transformers) are imported only when first needed."""
    models = importlib.import_module("creditlens.models")
    scoring = importlib.import_module("creditlens.scoring")
    model, tokenizer = models.load(name)
    return scoring.Scorer(model, tokenizer)


common.setup("Live scoring")
missing = [name for name in ("creditlens.models", "creditlens.scoring") if importlib.util.find_spec(name) is None]
if missing:
    unavailable(f"no module {', '.join(missing)}")


form_column, result_column = st.columns([2, 3], gap="large")
with form_column, st.form("live"):
    model_name = st.text_input("Model", value="smollm2-135m-instruct", key="model",
                               help="'smollm2-135m-instruct' (embedded), 'tiny' (test model) or a local model path")
    prompt = st.text_area("Prompt x", key="prompt", height=90,
                          value="Write a Python function add(a, b) that returns the sum of a and b.")
    feedback = st.text_area("Feedback f", key="feedback", height=70,
                            value="AssertionError: add(2, 3) returned -1, expected 5.")
    response = st.text_area("Response y", key="response", height=90,
                            value="def add(a, b):\n    return a - b")
    contrast_text = st.text_area("Contrast prompts x_j (one per line; K = number of lines, 0 for SD only)",
                                 key="contrasts", height=80,
                                 value="Write a Python function that reverses a string.\nWhat is the capital of France?")
    lam_col, pool_col, form_col = st.columns(3)
    credit = importlib.import_module("creditlens.credit")
    lam = lam_col.slider("lambda (CREDIT)", 0.0, 1.0, credit.DEFAULT_SPEC.lam, 0.05, key="lam")
    pools, forms = list(credit.POOLS), list(credit.FORMS)
    pool = pool_col.radio("Contrast pooling", pools, index=pools.index(credit.DEFAULT_SPEC.pool), horizontal=True,
                          key="pool")
    form = form_col.radio("CREDIT form", forms, index=forms.index(credit.DEFAULT_SPEC.form), key="form",
                          help="How credit_reward uses the contrasts (docs/dashboard.md, docs/CREDIT-MATH.md)")
    submitted = st.form_submit_button("Score", type="primary")

with result_column:
    if submitted:
        contrasts = [line.strip() for line in contrast_text.splitlines() if line.strip()]
        if not response.strip():
            common.fail("The response is empty: type the response to score.")
        examples = [dict(example_id=LIVE_ID, prompt=prompt, feedback=feedback, response=response, prompt_id="live")]
        examples += [dict(example_id=f"contrast-{j}", prompt=text, feedback=feedback, response=response,
                          prompt_id=f"contrast-{j}") for j, text in enumerate(contrasts)]
        try:
            with st.spinner("Scoring..."):
                spec = credit.CreditSpec(lam=lam, form=form, pool=pool, n_contrast=len(contrasts))
                table = load_scorer(model_name).score(examples, spec)
        except ImportError as error:
            unavailable(error)
        except Exception as error:  # a model path, a download or a tokenizer can fail many ways: show it
            common.fail(f"Scoring failed ({type(error).__name__}): {error}")
        st.session_state["live_tokens"] = table[table["example_id"] == LIVE_ID]

    tokens = st.session_state.get("live_tokens")
    if tokens is None:
        st.info("Press **Score** to score the response token by token.")
        st.stop()
    components = viz.available_components(tokens)
    component = st.selectbox("Colour by", components, key="live_component",
                             help="; ".join(f"{c}: {viz.COMPONENTS[c]}" for c in components))
    st.caption(common.settings_caption(tokens) + " · hover a token for its exact values")
    st.html(viz.token_heatmap_html(tokens, component))
    counted = tokens[tokens["mask"]]
    for column, name in zip(st.columns(4), ("sd_reward", "credit_reward", "specific", "shortcut"), strict=True):
        value = counted[name].sum(min_count=1) if name in counted else float("nan")
        column.metric(f"Σ {name}", "n/a" if value != value else f"{value:+.3f}")
    with st.expander("Token values"):
        st.dataframe(viz.TokenHeatmap(tokens, component).to_dataframe(), hide_index=True, width="stretch")
