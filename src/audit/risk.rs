//! The risk rules: which facts about a vehicle make it high, medium or low risk, and why.
//!
//! The flags themselves (rollback, structural damage, …) are computed from the exported tables
//! in [`super::flags`]; this file only grades them, so the whole policy is the one table in the
//! docs/audit.md ("Risk rules") and the one function [`assess`]. Every reason carries an English and a Chinese label
//! for the HTML report and a stable code for the `risk_reasons` column.

use super::fmt::thousands;

/// A vehicle not seen at a workshop for longer than this is medium risk.
pub(crate) const STALE_DAYS: i64 = 730;

/// Low < medium < high, so the level of a vehicle is the highest level of its reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RiskLevel {
    Low,
    Medium,
    High,
}

impl RiskLevel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
        }
    }
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reason {
    StructuralDamage,
    OdometerRollback {
        km: i64,
    },
    /// The latest report's highest reading is below the previous report's by more than the
    /// tolerance: the vendor itself said more, earlier.
    RollbackBetweenReports {
        km: i64,
    },
    AccidentRecorded,
    GradeD,
    EngineException,
    GradeC,
    AccidentUnknownWithExceptions {
        parts: i32,
    },
    NoRecentVisit {
        days: i64,
    },
    NoVisitRecorded,
}

impl Reason {
    pub(crate) fn level(&self) -> RiskLevel {
        match self {
            Reason::StructuralDamage
            | Reason::OdometerRollback { .. }
            | Reason::RollbackBetweenReports { .. }
            | Reason::AccidentRecorded
            | Reason::GradeD => RiskLevel::High,
            _ => RiskLevel::Medium,
        }
    }

    /// Stable code written to the `risk_reasons` column (`;`-separated).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Reason::StructuralDamage => "structural_damage",
            Reason::OdometerRollback { .. } => "odometer_rollback",
            Reason::RollbackBetweenReports { .. } => "rollback_between_reports",
            Reason::AccidentRecorded => "accident",
            Reason::GradeD => "grade_d",
            Reason::EngineException => "engine_exception",
            Reason::GradeC => "grade_c",
            Reason::AccidentUnknownWithExceptions { .. } => "accident_unknown_with_exceptions",
            Reason::NoRecentVisit { .. } => "no_recent_visit",
            Reason::NoVisitRecorded => "no_visit_recorded",
        }
    }

    /// What a person reads in the report: English, then Chinese.
    pub(crate) fn describe(&self) -> String {
        match self {
            Reason::StructuralDamage => "Frame or airbag exception · 车架/气囊异常".into(),
            Reason::OdometerRollback { km } => {
                format!("Odometer rollback of {} km · 里程回滚", thousands(*km))
            }
            Reason::RollbackBetweenReports { km } => format!(
                "Odometer {} km lower than the previous report · 两次报告间里程回滚",
                thousands(*km)
            ),
            Reason::AccidentRecorded => "Accident recorded · 事故车".into(),
            Reason::GradeD => "Accident grade D · 事故等级 D".into(),
            Reason::EngineException => "Engine exception · 发动机异常".into(),
            Reason::GradeC => "Accident grade C · 事故等级 C".into(),
            Reason::AccidentUnknownWithExceptions { parts } => format!(
                "Accident status unknown, {parts} part(s) with exceptions · 事故状态未知且有异常"
            ),
            Reason::NoRecentVisit { days } => format!(
                "No workshop visit for {} days · {} 天未到店",
                thousands(*days),
                thousands(*days)
            ),
            Reason::NoVisitRecorded => "No workshop visit recorded · 无到店记录".into(),
        }
    }
}

/// The facts the rules read, one vehicle's row of `vehicle_flags`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Facts {
    pub(crate) accident_status: Option<i8>,
    pub(crate) accident_grade: Option<String>,
    pub(crate) structural_damage: bool,
    pub(crate) engine_exception: bool,
    pub(crate) odometer_rollback: bool,
    pub(crate) max_rollback_km: i64,
    /// Between the previous report and the latest (vehicles bought again).
    pub(crate) rollback_between_reports: bool,
    pub(crate) rollback_between_km: i64,
    pub(crate) exception_parts: i32,
    pub(crate) days_since_last_visit: Option<i64>,
}

/// Every rule that fires for a vehicle, high first; an empty list means low risk.
pub(crate) fn assess(f: &Facts) -> Vec<Reason> {
    let grade = f.accident_grade.as_deref().map(str::trim);
    let grade_is = |g: &str| grade.is_some_and(|x| x.eq_ignore_ascii_case(g));
    let mut out = Vec::new();
    if f.structural_damage {
        out.push(Reason::StructuralDamage);
    }
    if f.odometer_rollback {
        out.push(Reason::OdometerRollback {
            km: f.max_rollback_km,
        });
    }
    if f.rollback_between_reports {
        out.push(Reason::RollbackBetweenReports {
            km: f.rollback_between_km,
        });
    }
    if f.accident_status == Some(1) {
        out.push(Reason::AccidentRecorded);
    }
    if grade_is("D") {
        out.push(Reason::GradeD);
    }
    if f.engine_exception {
        out.push(Reason::EngineException);
    }
    if grade_is("C") {
        out.push(Reason::GradeC);
    }
    // The vendor writes is_accident as -1 no, 0 unknown, 1 yes.
    if matches!(f.accident_status, None | Some(0)) && f.exception_parts > 0 {
        out.push(Reason::AccidentUnknownWithExceptions {
            parts: f.exception_parts,
        });
    }
    match f.days_since_last_visit {
        Some(days) if days > STALE_DAYS => out.push(Reason::NoRecentVisit { days }),
        Some(_) => {}
        None => out.push(Reason::NoVisitRecorded),
    }
    out
}

/// The level a list of reasons amounts to.
pub(crate) fn level_of(reasons: &[Reason]) -> RiskLevel {
    reasons
        .iter()
        .map(Reason::level)
        .max()
        .unwrap_or(RiskLevel::Low)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Facts {
        Facts {
            accident_status: Some(-1),
            accident_grade: Some("A".into()),
            days_since_last_visit: Some(30),
            ..Facts::default()
        }
    }

    #[test]
    fn a_clean_recent_vehicle_is_low() {
        assert!(assess(&clean()).is_empty());
        assert_eq!(level_of(&assess(&clean())), RiskLevel::Low);
    }

    #[test]
    fn each_high_rule_alone_makes_high() {
        let cases = [
            Facts {
                structural_damage: true,
                ..clean()
            },
            Facts {
                odometer_rollback: true,
                max_rollback_km: 5_000,
                ..clean()
            },
            Facts {
                accident_status: Some(1),
                ..clean()
            },
            Facts {
                accident_grade: Some(" d ".into()),
                ..clean()
            },
        ];
        for f in cases {
            let r = assess(&f);
            assert_eq!(r.len(), 1, "{f:?}: {r:?}");
            assert_eq!(level_of(&r), RiskLevel::High, "{f:?}");
        }
    }

    #[test]
    fn each_medium_rule_alone_makes_medium() {
        let cases = [
            Facts {
                engine_exception: true,
                ..clean()
            },
            Facts {
                accident_grade: Some("C".into()),
                ..clean()
            },
            Facts {
                accident_status: Some(0),
                exception_parts: 1,
                ..clean()
            },
            Facts {
                accident_status: None,
                exception_parts: 2,
                ..clean()
            },
            Facts {
                days_since_last_visit: Some(STALE_DAYS + 1),
                ..clean()
            },
            Facts {
                days_since_last_visit: None,
                ..clean()
            },
        ];
        for f in cases {
            let r = assess(&f);
            assert_eq!(r.len(), 1, "{f:?}: {r:?}");
            assert_eq!(level_of(&r), RiskLevel::Medium, "{f:?}");
        }
    }

    #[test]
    fn boundaries_do_not_fire() {
        let f = Facts {
            days_since_last_visit: Some(STALE_DAYS),
            accident_status: Some(-1),
            exception_parts: 0,
            ..clean()
        };
        assert!(assess(&f).is_empty());
        // A known non-accident with exceptions is graded by the parts, not the unknown rule.
        let f = Facts {
            exception_parts: 1,
            ..clean()
        };
        assert!(assess(&f).is_empty());
    }

    #[test]
    fn high_wins_and_all_reasons_are_kept() {
        let f = Facts {
            engine_exception: true,
            odometer_rollback: true,
            max_rollback_km: 12_345,
            ..clean()
        };
        let r = assess(&f);
        assert_eq!(level_of(&r), RiskLevel::High);
        assert_eq!(
            r.iter().map(Reason::code).collect::<Vec<_>>(),
            ["odometer_rollback", "engine_exception"]
        );
        assert!(r[0].describe().contains("12,345 km"), "{}", r[0].describe());
    }
}
