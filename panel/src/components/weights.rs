use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::{self, ApiError, FunctionDetail, MockEntry, OutcomeSummary};
use crate::components::{ErrorNote, OkNote};
use crate::format;

/// One outcome's line in the editor, as typed (the weight stays text so a
/// half-typed number is not rewritten under the cursor).
#[derive(Clone, Debug, PartialEq)]
struct WeightRow {
    outcome_id: String,
    weight: String,
    enabled: bool,
    ignore_args: bool,
}

impl WeightRow {
    fn weight(&self) -> Option<f64> {
        self.weight
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|w| w.is_finite() && *w >= 0.0)
    }
}

/// The editor's rows for the current outcomes. Outcomes without an entry
/// start at weight 1 while no entry exists (mock mode then picks uniformly,
/// and the editor shows that), else at 0 (the server picks configured
/// entries only). With `keep_edits`, rows already shown keep what was typed.
fn rows_for(
    current: &[WeightRow],
    outcomes: &[OutcomeSummary],
    entries: &[MockEntry],
    keep_edits: bool,
) -> Vec<WeightRow> {
    let fresh_weight = if entries.is_empty() { "1" } else { "0" };
    outcomes
        .iter()
        .map(|o| {
            let kept = keep_edits
                .then(|| current.iter().find(|r| r.outcome_id == o.id))
                .flatten();
            if let Some(row) = kept {
                return row.clone();
            }
            match entries.iter().find(|e| e.outcome_id == o.id) {
                Some(e) => WeightRow {
                    outcome_id: o.id.clone(),
                    weight: e.weight.to_string(),
                    enabled: e.enabled,
                    ignore_args: e.ignore_args,
                },
                None => WeightRow {
                    outcome_id: o.id.clone(),
                    weight: fresh_weight.to_owned(),
                    enabled: true,
                    ignore_args: true,
                },
            }
        })
        .collect()
}

fn entries_of(rows: &[WeightRow]) -> Result<Vec<MockEntry>, ApiError> {
    rows.iter()
        .map(|r| match r.weight() {
            Some(weight) => Ok(MockEntry {
                outcome_id: r.outcome_id.clone(),
                weight,
                enabled: r.enabled,
                ignore_args: r.ignore_args,
            }),
            None => Err(ApiError::invalid(
                "weight",
                format!(
                    "the weight of outcome {} must be a number ≥ 0, got `{}`",
                    format::short_id(&r.outcome_id),
                    r.weight
                ),
            )),
        })
        .collect()
}

/// Weight, enabled and ignore_args per outcome, each outcome's resulting
/// share of mock replies shown as you type; Save replaces the whole list.
#[component]
pub(crate) fn WeightsEditor(
    function_id: String,
    detail: RwSignal<Option<FunctionDetail>>,
) -> impl IntoView {
    let rows = RwSignal::new(Vec::<WeightRow>::new());
    let dirty = RwSignal::new(false);
    let error = RwSignal::new(None::<ApiError>);
    let saved = RwSignal::new(None::<String>);
    let configured = Memo::new(move |_| {
        detail.with(|d| d.as_ref().is_some_and(|d| !d.mock_outcomes.is_empty()))
    });

    Effect::new(move |_| {
        let keep_edits = dirty.get();
        detail.with(|d| {
            if let Some(d) = d {
                let next = rows.with_untracked(|current| {
                    rows_for(current, &d.outcomes, &d.mock_outcomes, keep_edits)
                });
                if rows.with_untracked(|current| *current != next) {
                    rows.set(next);
                }
            }
        });
    });

    let shares = Memo::new(move |_| {
        rows.with(|rows| {
            let weights: Vec<(f64, bool)> = rows
                .iter()
                .map(|r| (r.weight().unwrap_or(0.0), r.enabled))
                .collect();
            format::shares(&weights)
        })
    });
    let ids = Memo::new(move |_| {
        rows.with(|rows| {
            rows.iter()
                .map(|r| r.outcome_id.clone())
                .collect::<Vec<_>>()
        })
    });
    let nothing_eligible = move || shares.with(|s| !s.is_empty() && s.iter().all(Option::is_none));

    let lines = Lines { rows, dirty, saved };

    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let entries = match rows.with_untracked(|rows| entries_of(rows)) {
            Ok(entries) => entries,
            Err(e) => return error.set(Some(e)),
        };
        let function_id = function_id.clone();
        error.set(None);
        spawn_local(async move {
            match api::set_mock_outcomes(&function_id, &entries).await {
                Ok(()) => {
                    let n = entries.len();
                    // Show the saved list at once instead of flashing the old
                    // one until the next poll.
                    detail.update(|d| {
                        if let Some(d) = d {
                            d.mock_outcomes = entries;
                        }
                    });
                    dirty.set(false);
                    saved.set(Some(format!(
                        "Saved {n} entr{}.",
                        if n == 1 { "y" } else { "ies" }
                    )));
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };

    view! {
        <section class="card wide" aria-labelledby="weights-h">
            <h2 id="weights-h">"Mock weights"</h2>
            <p class="hint">
                {move || if configured.get() {
                    "In mock mode each reply is picked among enabled outcomes with weight > 0, in proportion to their weights."
                } else {
                    "No weights saved yet: mock mode picks uniformly among all outcomes. Save to use the weights below."
                }}
            </p>
            <form on:submit=save>
                <div class="table-wrap">
                    <table class="weights stack-narrow" data-testid="weights-table">
                        <thead>
                            <tr>
                                <th scope="col">"Outcome"</th>
                                <th scope="col">"Enabled"</th>
                                <th scope="col">"Weight"</th>
                                <th scope="col" title="Off: only for calls with this outcome's own call key">"Any arguments"</th>
                                <th scope="col" class="num">"Share"</th>
                            </tr>
                        </thead>
                        <tbody>
                            <For each=move || ids.get() key=|id| id.clone() let:outcome_id>
                                <WeightLine outcome_id lines shares ids detail/>
                            </For>
                        </tbody>
                    </table>
                </div>
                {move || nothing_eligible().then(|| view! {
                    <p class="error" role="alert" data-testid="weights-warning">
                        "No outcome can be picked with these weights: mock calls will fail with no_mock_outcome."
                    </p>
                })}
                <div class="row">
                    <button type="submit" id="weights-save" disabled=move || ids.with(Vec::is_empty)>"Save weights"</button>
                    <button type="button" id="weights-reset" disabled=move || !dirty.get() on:click=move |_| { error.set(None); dirty.set(false) }>
                        "Discard changes"
                    </button>
                    {move || dirty.get().then(|| view! { <span class="muted" data-testid="weights-dirty">"Unsaved changes"</span> })}
                </div>
            </form>
            <ErrorNote context="Weights not saved" error testid="weights-error"/>
            <OkNote message=saved testid="weights-ok"/>
        </section>
    }
}

/// The editor's rows as typed, and what editing them sets off.
#[derive(Clone, Copy)]
struct Lines {
    rows: RwSignal<Vec<WeightRow>>,
    dirty: RwSignal<bool>,
    saved: RwSignal<Option<String>>,
}

impl Lines {
    fn read<T: Default>(self, outcome_id: &str, pick: impl Fn(&WeightRow) -> T) -> T {
        self.rows.with(|rows| {
            rows.iter()
                .find(|r| r.outcome_id == outcome_id)
                .map(pick)
                .unwrap_or_default()
        })
    }

    fn edit(self, outcome_id: &str, change: impl FnOnce(&mut WeightRow)) {
        self.rows.update(|rows| {
            if let Some(row) = rows.iter_mut().find(|r| r.outcome_id == outcome_id) {
                change(row);
            }
        });
        self.saved.set(None);
        self.dirty.set(true);
    }
}

#[component]
fn WeightLine(
    outcome_id: String,
    lines: Lines,
    shares: Memo<Vec<Option<f64>>>,
    ids: Memo<Vec<String>>,
    detail: RwSignal<Option<FunctionDetail>>,
) -> impl IntoView {
    let short = format::short_id(&outcome_id).to_owned();
    let summary = {
        let outcome_id = outcome_id.clone();
        move || {
            detail.with(|d| {
                d.as_ref()
                    .and_then(|d| d.outcomes.iter().find(|o| o.id == outcome_id))
                    .map(outcome_label)
            })
        }
    };
    let share = {
        let outcome_id = outcome_id.clone();
        move || {
            ids.with(|ids| ids.iter().position(|i| *i == outcome_id))
                .and_then(|i| shares.with(|s| s.get(i).copied().flatten()))
                .map_or_else(|| "—".to_owned(), |p| format!("{p:.1} %"))
        }
    };
    let checkbox = |label: &'static str,
                    testid: &'static str,
                    pick: fn(&WeightRow) -> bool,
                    set: fn(&mut WeightRow, bool)| {
        let (read_id, write_id) = (outcome_id.clone(), outcome_id.clone());
        view! {
            <td data-label=label>
                <input
                    type="checkbox"
                    data-testid=testid
                    aria-label=format!("{label}: outcome {short}")
                    prop:checked=move || lines.read(&read_id, pick)
                    on:change=move |ev| {
                        let on = event_target_checked(&ev);
                        lines.edit(&write_id, |r| set(r, on));
                    }
                />
            </td>
        }
    };
    let (read_id, write_id) = (outcome_id.clone(), outcome_id.clone());

    view! {
        <tr data-testid="weight-row" data-outcome-id=outcome_id.clone()>
            <th scope="row" data-label="Outcome">
                <code>{short.clone()}</code> " " <span class="muted">{summary}</span>
            </th>
            {checkbox("Enabled", "enabled", |r| r.enabled, |r, on| r.enabled = on)}
            <td data-label="Weight">
                <input
                    type="number"
                    min="0"
                    step="any"
                    class="weight"
                    data-testid="weight"
                    aria-label=format!("Weight: outcome {short}")
                    prop:value=move || lines.read(&read_id, |r| r.weight.clone())
                    on:input=move |ev| {
                        let typed = event_target_value(&ev);
                        lines.edit(&write_id, |r| r.weight = typed);
                    }
                />
            </td>
            {checkbox("Any arguments", "ignore-args", |r| r.ignore_args, |r, on| r.ignore_args = on)}
            <td class="num" data-label="Share" data-testid="share">{share}</td>
        </tr>
    }
}

fn outcome_label(o: &OutcomeSummary) -> String {
    let head = match (o.status, &o.exception_type) {
        (Some(status), _) => status.to_string(),
        (None, Some(kind)) => kind.clone(),
        (None, None) => o.outcome_type.clone(),
    };
    let preview: String = o.preview.chars().take(40).collect();
    format!("{head} {preview}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str) -> OutcomeSummary {
        OutcomeSummary {
            id: id.into(),
            call_key: None,
            outcome_type: "return".into(),
            count: 1,
            is_manual: false,
            is_mock_only: false,
            created_at: None,
            last_seen_at: None,
            status: Some(200),
            exception_type: None,
            preview: String::new(),
            size: None,
        }
    }

    fn row(id: &str, weight: &str) -> WeightRow {
        WeightRow {
            outcome_id: id.into(),
            weight: weight.into(),
            enabled: true,
            ignore_args: true,
        }
    }

    #[test]
    fn unconfigured_outcomes_start_equal_and_configured_ones_keep_their_entry() {
        let outcomes = [outcome("a"), outcome("b")];
        assert_eq!(
            rows_for(&[], &outcomes, &[], false),
            vec![row("a", "1"), row("b", "1")]
        );
        let entries = [MockEntry {
            outcome_id: "a".into(),
            weight: 3.0,
            enabled: true,
            ignore_args: false,
        }];
        let rows = rows_for(&[], &outcomes, &entries, false);
        assert_eq!(
            rows[0],
            WeightRow {
                ignore_args: false,
                ..row("a", "3")
            }
        );
        assert_eq!(rows[1], row("b", "0"));
    }

    #[test]
    fn edits_survive_a_refresh_and_new_outcomes_are_added() {
        let typed = vec![row("a", "2.")];
        let rows = rows_for(&typed, &[outcome("a"), outcome("c")], &[], true);
        assert_eq!(rows, vec![row("a", "2."), row("c", "1")]);
        assert_eq!(
            rows_for(&typed, &[outcome("a")], &[], false),
            vec![row("a", "1")]
        );
    }

    #[test]
    fn a_weight_that_is_not_a_number_is_reported_by_outcome() {
        let err = entries_of(&[row("0123456789abcdef", "x")]).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("weight"));
        assert!(err.message.contains("01234567"), "{}", err.message);
        assert!(entries_of(&[row("a", "-1")]).is_err());
        assert_eq!(entries_of(&[row("a", " 3 ")]).unwrap()[0].weight, 3.0);
    }
}
