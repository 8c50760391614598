//! The numbering plans of libphonenumber's metadata, compiled once per country code,
//! so the common numbers are checked without the `phonenumber` parser.
//!
//! That parser takes about 12 µs a number and matches every pattern through one
//! 100-entry regex cache behind a global lock: it does not scale to a second core,
//! and a batch that mixes more countries than the cache holds recompiles patterns
//! at milliseconds a number. Here the same patterns are compiled into plain
//! [`Regex`]es, and [`international`] and [`national`] decide the numbers whose
//! digits the parser would keep as written, with the same validity rule as
//! `phonenumber::is_valid`. Every other number is left to the parser. Each thread
//! checks with its own copy of the compiled plans, so threads never wait on each
//! other's regex caches.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{LazyLock, OnceLock};

use phonenumber::country::Id;
use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use regex::{Regex, RegexBuilder};

use super::Refusal;

/// The longest national significant number the parser accepts, and the shortest.
/// (libphonenumber allows 17 digits; this parser refuses 17 as too long.)
const MAX_NSN: usize = 16;
const MIN_NSN: usize = 2;

/// The digits after the international call prefix of `region` (`00` in China, `011`
/// in the US), when the number starts with one, by the parser's rule: the prefix
/// must be followed by a digit other than 0, as country codes are.
pub(super) fn strip_international_prefix(region: Id, digits: &str) -> Option<&str> {
    let home = home(region)?;
    let prefix = home.region().international_prefix.as_ref()?.find(digits)?;
    let rest = &digits[prefix.end()..];
    (!rest.starts_with('0')).then_some(rest)
}

/// Normalises the digits dialled after `+`, or `None` when the parser must decide
/// because it could rewrite them (a national prefix or carrier code after the
/// country code, as in `+44 (0)20…`).
pub(super) fn international(digits: &str) -> Option<Result<String, Refusal>> {
    // The parser's own limits, checked in its order, so refusals read the same.
    if digits.len() <= MIN_NSN {
        return Some(Err(Refusal::TooShort));
    }
    if digits.starts_with('0') {
        return Some(Err(Refusal::UnknownCountryCode));
    }
    let Some(code) = (1..=3)
        .filter_map(|len| digits[..len].parse().ok())
        .find(|code| PLANS.contains_key(code))
    else {
        return Some(Err(Refusal::UnknownCountryCode));
    };
    let nsn = &digits[code.ilog10() as usize + 1..];
    let plan = plan(code)?;
    if plan.regions.iter().any(|region| region.may_rewrite(nsn)) {
        return None;
    }
    Some(if nsn.len() < MIN_NSN {
        Err(Refusal::TooShort)
    } else if nsn.len() > MAX_NSN {
        Err(Refusal::TooLong)
    } else if plan.is_valid(nsn) {
        Ok(e164(code, nsn))
    } else {
        Err(Refusal::NotInPlan(code))
    })
}

/// Normalises digits dialled in the national form of `region` when they are a
/// valid number exactly as written; `None` when the parser must decide: the
/// number is not valid as written, or starts with something the parser could strip
/// (the national prefix, a carrier code, the country code).
pub(super) fn national(region: Id, digits: &str) -> Option<String> {
    let home = home(region)?;
    let code = home.region().code;
    let rewritable = home.region().may_rewrite(digits) || starts_with_code(digits, code);
    (!rewritable && (MIN_NSN..=MAX_NSN).contains(&digits.len()) && home.plan.is_valid(digits))
        .then(|| e164(code, digits))
}

/// `+`, the country code (1 to 3 digits) and the national significant number,
/// written without `format!`, which cost a third of a number's normalization.
fn e164(code: u16, nsn: &str) -> String {
    let mut number = String::with_capacity(4 + nsn.len());
    number.push('+');
    for (place, shown) in [(100, code >= 100), (10, code >= 10), (1, true)] {
        if shown {
            number.push(char::from(b'0' + (code / place % 10) as u8));
        }
    }
    number.push_str(nsn);
    number
}

fn starts_with_code(digits: &str, code: u16) -> bool {
    let len = code.ilog10() as usize + 1;
    digits.get(..len).and_then(|start| start.parse().ok()) == Some(code)
}

/// Every country code of the metadata, with its plans compiled on first use. The
/// codes are looked up one by one: `DATABASE.iter()` yields one entry per region
/// id, so of the non-geographic codes (+800, +888, …), which share the id `001`,
/// it holds only one.
static PLANS: LazyLock<HashMap<u16, OnceLock<Option<Plan>>>> = LazyLock::new(|| {
    (1..1000)
        .filter(|code| DATABASE.region(code).is_some())
        .map(|code| (code, OnceLock::new()))
        .collect()
});

/// Loads the metadata and compiles the plans of `region`'s country code now, so
/// the first batch does not pay for it.
pub(super) fn prepare(region: Option<Id>) {
    LazyLock::force(&PLANS);
    if let Some(code) = region
        .and_then(|region| DATABASE.by_id(region.as_ref()))
        .map(|meta| meta.country_code())
    {
        shared_plan(code);
    }
}

fn shared_plan(code: u16) -> Option<&'static Plan> {
    PLANS
        .get(&code)?
        .get_or_init(|| Plan::compile(code))
        .as_ref()
}

thread_local! {
    /// This thread's copies of the plans, by country code (`None` until asked
    /// for). A regex shared by threads lends its match cache to every thread but
    /// the first under a lock; a copy's regexes keep caches of their own.
    static LOCAL_PLANS: RefCell<Vec<Option<Option<Rc<Plan>>>>> = const { RefCell::new(Vec::new()) };
    /// The region last asked for, with its country code and place among that
    /// code's regions: numbers mostly come from the one default region.
    static LAST_HOME: Cell<Option<(Id, u16, usize)>> = const { Cell::new(None) };
}

/// The plans of `code`, this thread's copy.
fn plan(code: u16) -> Option<Rc<Plan>> {
    LOCAL_PLANS.with_borrow_mut(|plans| {
        let slot = usize::from(code);
        if plans.len() <= slot {
            plans.resize(slot + 1, None);
        }
        plans[slot]
            .get_or_insert_with(|| shared_plan(code).map(|p| Rc::new(p.clone())))
            .clone()
    })
}

/// A region's plan within its country code's plans.
struct Home {
    plan: Rc<Plan>,
    index: usize,
}

impl Home {
    fn region(&self) -> &RegionPlan {
        &self.plan.regions[self.index]
    }
}

/// The plan of a region, for numbers dialled there.
fn home(region: Id) -> Option<Home> {
    if let Some((last, code, index)) = LAST_HOME.get()
        && last == region
    {
        return Some(Home {
            plan: plan(code)?,
            index,
        });
    }
    let code = DATABASE.by_id(region.as_ref())?.country_code();
    let plan = plan(code)?;
    let index = plan.regions.iter().position(|r| r.id == region.as_ref())?;
    LAST_HOME.set(Some((region, code, index)));
    Some(Home { plan, index })
}

/// The numbering plans that share one country code, in the metadata's order (the
/// main country first), as `phonenumber::validator::source_for` walks them.
#[derive(Clone)]
struct Plan {
    regions: Vec<RegionPlan>,
}

#[derive(Clone)]
struct RegionPlan {
    id: String,
    code: u16,
    /// Which numbers of a shared country code belong to this region.
    leading_digits: Option<Regex>,
    general: Pattern,
    /// Fixed line, mobile, toll free and the other number types.
    types: Vec<Pattern>,
    international_prefix: Option<Regex>,
    national_prefix: Option<String>,
    prefix_for_parsing: Option<Regex>,
}

/// A descriptor of the metadata: possible lengths and the pattern the number must
/// start with, both as `Descriptor::is_match` reads them.
#[derive(Clone)]
struct Pattern {
    lengths: Vec<u16>,
    regex: Regex,
}

impl Plan {
    /// `None` when a pattern of the metadata does not compile (it always does; the
    /// parser then decides).
    fn compile(code: u16) -> Option<Plan> {
        let regions = DATABASE.region(&code)?;
        let metas: Vec<&Metadata> = if regions == ["001"] {
            // Non-geographic codes such as +800: the parser takes the first entry.
            DATABASE.by_code(&code)?.into_iter().take(1).collect()
        } else {
            regions
                .iter()
                .map(|id| DATABASE.by_id(*id))
                .collect::<Option<_>>()?
        };
        let regions = metas
            .into_iter()
            .map(RegionPlan::compile)
            .collect::<Result<_, _>>()
            .ok()?;
        Some(Plan { regions })
    }

    /// `phonenumber::is_valid` for a national significant number of this code: the
    /// region is the only one, or the first whose leading digits match (or, without
    /// leading digits, that has a type for the number), and the number must have a
    /// type there.
    fn is_valid(&self, nsn: &str) -> bool {
        let region = match self.regions.as_slice() {
            [only] => Some(only),
            regions => regions.iter().find(|r| match &r.leading_digits {
                Some(leading) => leading.is_match(nsn),
                None => r.has_type(nsn),
            }),
        };
        region.is_some_and(|r| r.has_type(nsn))
    }
}

impl RegionPlan {
    fn compile(meta: &Metadata) -> Result<RegionPlan, regex::Error> {
        let d = meta.descriptors();
        // A number is valid when any type has it, so the order is only speed:
        // mobile numbers, what messages mostly go to, are tried first.
        let types = [
            d.mobile(),
            d.fixed_line(),
            d.premium_rate(),
            d.toll_free(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ];
        Ok(RegionPlan {
            id: meta.id().to_string(),
            code: meta.country_code(),
            leading_digits: meta
                .leading_digits()
                .map(|re| prefix_regex(re.as_str()))
                .transpose()?,
            general: Pattern::compile(d.general())?,
            types: types
                .into_iter()
                .flatten()
                .map(Pattern::compile)
                .collect::<Result<_, _>>()?,
            international_prefix: meta
                .international_prefix()
                .map(|re| prefix_regex(re.as_str()))
                .transpose()?,
            national_prefix: meta.national_prefix().map(str::to_string),
            prefix_for_parsing: meta
                .national_prefix_for_parsing()
                .map(|re| prefix_regex(re.as_str()))
                .transpose()?,
        })
    }

    /// Whether the parser could strip or rewrite the start of these digits in this
    /// region: they begin with its national prefix or its prefix-for-parsing.
    fn may_rewrite(&self, digits: &str) -> bool {
        self.national_prefix
            .as_deref()
            .is_some_and(|prefix| digits.starts_with(prefix))
            || self
                .prefix_for_parsing
                .as_ref()
                .is_some_and(|re| re.is_match(digits))
    }

    fn has_type(&self, nsn: &str) -> bool {
        self.general.is_match(nsn) && self.types.iter().any(|t| t.is_match(nsn))
    }
}

impl Pattern {
    fn compile(descriptor: &Descriptor) -> Result<Pattern, regex::Error> {
        Ok(Pattern {
            lengths: descriptor.possible_length().to_vec(),
            regex: prefix_regex(descriptor.national_number().as_str())?,
        })
    }

    fn is_match(&self, nsn: &str) -> bool {
        let length = u16::try_from(nsn.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&length)) && self.regex.is_match(nsn)
    }
}

/// A metadata pattern that must match at the start of the text, compiled with the
/// parser's options: the parser accepts a match that starts at the first digit.
fn prefix_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&format!("^(?:{pattern})"))
        .ignore_whitespace(true)
        .build()
}
