use std::sync::LazyLock;

use proptest::prelude::*;

use super::*;

fn region(code: &str) -> PhoneRules {
    PhoneRules {
        default_region: Some(code.parse().expect("a known region")),
    }
}

fn phone(raw: &str, rules: &PhoneRules) -> String {
    normalize_phone(raw, rules).unwrap_or_else(|InvalidAddress(why)| panic!("{why}"))
}

fn phone_refusal(raw: &str, rules: &PhoneRules) -> String {
    match normalize_phone(raw, rules) {
        Ok(number) => panic!("`{raw}` accepted as {number}"),
        Err(InvalidAddress(why)) => why,
    }
}

#[test]
fn regions_parse_from_two_letter_codes_in_either_case() {
    assert_eq!("CN".parse::<Region>().unwrap().to_string(), "CN");
    assert_eq!("us".parse::<Region>().unwrap().to_string(), "US");
    let why = "XX".parse::<Region>().unwrap_err();
    assert!(why.contains("`XX`"), "{why}");
}

#[test]
fn national_numbers_take_the_country_code_of_the_default_region() {
    let cn = region("CN");
    for raw in [
        "13800138000",
        "138 0013 8000",
        "138-0013-8000",
        " 138.0013.8000 ",
    ] {
        assert_eq!(phone(raw, &cn), "+8613800138000", "{raw}");
    }
    let us = region("US");
    for raw in [
        "(415) 555-2671",
        "415.555.2671",
        "1 415 555 2671",
        "+1 415 555 2671",
    ] {
        assert_eq!(phone(raw, &us), "+14155552671", "{raw}");
    }
    assert_eq!(phone("020 7946 0958", &region("GB")), "+442079460958");
}

#[test]
fn international_numbers_need_no_default_region() {
    let none = PhoneRules::default();
    assert_eq!(phone("+86 138 0013 8000", &none), "+8613800138000");
    assert_eq!(phone("+44 (0)20 7946 0958", &none), "+442079460958");
}

#[test]
fn national_significant_numbers_of_17_digits_are_too_long_as_the_parser_says() {
    // Japan's toll-free plan has numbers of up to 17 digits, which the parser
    // refuses all the same.
    let jp = region("JP");
    assert_eq!(phone("8000000000000000", &jp), "+818000000000000000");
    assert!(phone_refusal("80000000000000000", &jp).contains("too many digits"));
    assert!(
        phone_refusal("+81 80000000000000000", &PhoneRules::default()).contains("too many digits")
    );
}

#[test]
fn every_non_geographic_country_code_is_known() {
    // They share the region id `001`; each has its own numbering plan.
    let none = PhoneRules::default();
    assert_eq!(phone("+800 1234 5678", &none), "+80012345678");
    assert_eq!(phone("+888 0000 0000 001", &none), "+88800000000001");
    assert_eq!(
        phone("00 888 0000 0000 001", &region("IT")),
        "+88800000000001"
    );
    assert_eq!(phone("+870 301 234 567", &none), "+870301234567");
}

#[test]
fn international_call_prefix_of_the_default_region_counts_as_a_plus() {
    assert_eq!(phone("0044 20 7946 0958", &region("CN")), "+442079460958");
    assert_eq!(phone("011 44 20 7946 0958", &region("US")), "+442079460958");
}

#[test]
fn foreign_numbers_keep_their_digits_whatever_the_default_region() {
    // The US national prefix is 1: read with US rules these numbers would lose it.
    let us = region("US");
    assert_eq!(phone("+86 138 0013 8000", &us), "+8613800138000");
    assert_eq!(phone("011 86 138 0013 8000", &us), "+8613800138000");
}

#[test]
fn numbers_without_country_code_need_a_default_region() {
    let why = phone_refusal("13800138000", &PhoneRules::default());
    assert_eq!(
        why,
        "`13800138000` is not a phone number: it has no country code: write it with + and the country code, or set recipients.default_region (e.g. CN)"
    );
}

#[test]
fn numbers_outside_the_numbering_plan_are_refused_with_the_reason() {
    let cn = region("CN");
    assert_eq!(
        phone_refusal("+86 138 0013 800", &cn),
        "`+86 138 0013 800` is not a phone number: no number of country code +86 has these digits"
    );
    assert!(phone_refusal("+999 1234567", &cn).ends_with("its country code is unknown"));
    let why = phone_refusal("1", &cn);
    assert!(why.ends_with("it has too few digits"), "{why}");
    assert!(phone_refusal("+86 138 0013 8000 1234 5678 9", &cn).contains("`+86 138 0013 8000"));
}

#[test]
fn letters_extensions_and_other_symbols_are_refused() {
    let us = region("US");
    for raw in [
        "+1 415 555 2671 ext 12",
        "+1-800-FLOWERS",
        "tel:+1-415-555-2671",
        "415/555/2671",
        "(+1) 415 555 2671",
        "++14155552671",
    ] {
        let why = phone_refusal(raw, &us);
        assert!(
            why.ends_with("only digits, an optional leading + and separators are allowed"),
            "{why}"
        );
    }
    assert_eq!(phone_refusal("  ", &us), "empty address");
}

#[test]
fn refusals_escape_line_breaks_in_the_input() {
    let why = phone_refusal("138\r\n0013", &region("CN"));
    assert!(
        why.starts_with("`138\\r\\n0013` is not a phone number"),
        "{why}"
    );
}

fn mailbox(raw: &str) -> Mailbox {
    Mailbox::parse(raw, &EmailRules::default())
        .unwrap_or_else(|InvalidAddress(why)| panic!("{why}"))
}

fn email_refusal(raw: &str, rules: &EmailRules) -> String {
    match Mailbox::parse(raw, rules) {
        Ok(mailbox) => panic!("`{raw}` accepted as {mailbox:?}"),
        Err(InvalidAddress(why)) => why,
    }
}

fn named(name: &str, address: &str) -> Mailbox {
    Mailbox {
        name: Some(name.into()),
        address: address.into(),
    }
}

#[test]
fn bare_addresses_have_no_name_and_a_lower_case_domain() {
    assert_eq!(
        mailbox(" Li.Wei@Example.COM "),
        Mailbox {
            name: None,
            address: "Li.Wei@example.com".into()
        }
    );
    assert_eq!(mailbox("<li@example.com>").name, None);
    assert_eq!(mailbox("\"\" <li@example.com>").name, None);
}

#[test]
fn display_names_are_kept_quoted_or_not() {
    let li = named("Li Wei", "li@example.com");
    assert_eq!(mailbox("\"Li Wei\" <li@example.com>"), li);
    assert_eq!(mailbox("Li Wei <li@example.com>"), li);
    assert_eq!(mailbox("Li Wei<li@example.com>"), li);
    assert_eq!(mailbox("Li Wei < li@Example.com >"), li);
    assert_eq!(
        mailbox("Dr. Li <li@example.com>"),
        named("Dr. Li", "li@example.com")
    );
    assert_eq!(
        mailbox("\"Wei, Li\" <li@example.com>"),
        named("Wei, Li", "li@example.com")
    );
    assert_eq!(
        mailbox(r#""say \"hi\" \\o/" <li@example.com>"#),
        named(r#"say "hi" \o/"#, "li@example.com")
    );
    assert_eq!(
        mailbox("李伟 <li@example.com>"),
        named("李伟", "li@example.com")
    );
}

#[test]
fn display_quotes_names_only_when_they_need_it() {
    let shown = |name: &str| named(name, "li@example.com").to_string();
    assert_eq!(shown("Li Wei"), "Li Wei <li@example.com>");
    assert_eq!(shown("李伟"), "李伟 <li@example.com>");
    assert_eq!(shown("O'Neil"), "O'Neil <li@example.com>");
    assert_eq!(shown("Dr. Li"), "\"Dr. Li\" <li@example.com>");
    assert_eq!(shown("Wei, Li"), "\"Wei, Li\" <li@example.com>");
    assert_eq!(shown("Li  Wei"), "\"Li  Wei\" <li@example.com>");
    assert_eq!(
        shown(r#"say "hi" \o/"#),
        r#""say \"hi\" \\o/" <li@example.com>"#
    );
    assert_eq!(mailbox("li@example.com").to_string(), "li@example.com");
}

#[test]
fn line_breaks_are_refused_anywhere() {
    for raw in [
        "li@example.com\r\nBcc: all@example.com",
        "Li\nWei <li@example.com>",
        "\"Li\r\n Wei\" <li@example.com>",
        "li@exam\rple.com",
    ] {
        let why = email_refusal(raw, &EmailRules::default());
        assert!(why.ends_with("it contains a line break"), "{why}");
        assert!(!why.contains(['\r', '\n']), "{why}");
    }
    let why = email_refusal("li\t@example.com", &EmailRules::default());
    assert!(why.ends_with("it contains control characters"), "{why}");
}

#[test]
fn local_domains_are_refused_unless_allowed() {
    let strict = EmailRules::default();
    let local = EmailRules {
        allow_local_domains: true,
    };
    for raw in [
        "li@localhost",
        "li@mailhost",
        "li@printer.local",
        "li@ci.test",
        "li@corp.internal",
    ] {
        let why = email_refusal(raw, &strict);
        assert!(why.contains("is a local domain"), "{why}");
        assert!(Mailbox::parse(raw, &local).is_ok(), "{raw}");
    }
    assert!(email_refusal("li@10.0.0.1", &local).contains("`1` is not a top-level domain"));
}

#[test]
fn local_parts_are_dot_atoms_of_at_most_64_characters() {
    for ok in [
        "li+tag@example.com",
        "o'neil@example.com",
        "a.b.c@example.com",
        "#!$%&*/=?^_`{|}~-@example.com",
    ] {
        mailbox(ok);
    }
    mailbox(&format!("{}@example.com", "a".repeat(64)));
    let rules = EmailRules::default();
    assert!(
        email_refusal(&format!("{}@example.com", "a".repeat(65)), &rules)
            .ends_with("1 to 64 characters")
    );
    assert!(email_refusal("@example.com", &rules).ends_with("1 to 64 characters"));
    for dots in [".li@example.com", "li.@example.com", "l..i@example.com"] {
        assert!(email_refusal(dots, &rules).contains("dot"), "{dots}");
    }
    for odd in ["l(i)@example.com", "lì@example.com", "li@wei@example.com"] {
        assert!(
            email_refusal(odd, &rules).contains("may hold only ASCII"),
            "{odd}"
        );
    }
    assert!(email_refusal("\"li wei\"@example.com", &rules).contains("quoted local parts"));
    assert!(email_refusal("li wei@example.com", &rules).ends_with("white space"));
    assert!(email_refusal("li.example.com", &rules).ends_with("it has no @"));
}

#[test]
fn addresses_have_at_most_254_characters() {
    let label = "d".repeat(63);
    let domain = format!("{label}.{label}.{}.com", "d".repeat(58));
    mailbox(&format!("{}@{domain}", "l".repeat(63)));
    let why = email_refusal(
        &format!("{}@{domain}", "l".repeat(64)),
        &EmailRules::default(),
    );
    assert!(
        why.ends_with("it has 255 characters, an address has at most 254"),
        "{why}"
    );
}

#[test]
fn domains_are_dns_names_with_a_top_level_name() {
    let rules = EmailRules::default();
    for bad in [
        "li@-x.com",
        "li@x-.com",
        "li@x..com",
        "li@x.com.",
        "li@x_y.com",
        "li@.com",
    ] {
        let why = email_refusal(bad, &rules);
        assert!(
            why.ends_with("the domain must be a name with a dot, such as example.com"),
            "{why}"
        );
    }
    assert!(email_refusal("li@1.2.3.4", &rules).ends_with("`4` is not a top-level domain name"));
    assert!(email_refusal("li@example.c", &rules).ends_with("`c` is not a top-level domain name"));
    assert!(email_refusal("li@example.c0m", &rules).contains("top-level"));
    assert!(email_refusal("li@[192.0.2.1]", &rules).contains("address literals"));
    assert!(
        email_refusal(&format!("li@{}.com", "d".repeat(64)), &rules)
            .contains("such as example.com")
    );
}

#[test]
fn international_domains_are_kept_in_utf8_lower_case() {
    assert_eq!(mailbox("li@例子.中国").address, "li@例子.中国");
    assert_eq!(mailbox("Li@BÜCHER.de").address, "Li@bücher.de");
    assert_eq!(
        mailbox("li@xn--bcher-kva.xn--p1ai").address,
        "li@xn--bcher-kva.xn--p1ai"
    );
}

#[test]
fn malformed_display_names_are_refused() {
    let rules = EmailRules::default();
    for (raw, why) in [
        ("Wei, Li <li@example.com>", "must be in double quotes"),
        ("\"Li Wei <li@example.com>", "ends inside its quotes"),
        (
            "\"Li\" Wei <li@example.com>",
            "text after its closing quote",
        ),
        ("li@example.com>", "has no <"),
        ("Li <li@example.com> x", "white space"),
    ] {
        let refusal = email_refusal(raw, &rules);
        assert!(refusal.contains(why), "{raw}: {refusal}");
    }
}

/// Regions for the formatting property below, chosen for varied national prefixes
/// and number lengths, whose national forms have no carrier codes to dial.
const REGIONS: &[&str] = &[
    "CN", "US", "GB", "DE", "FR", "IN", "JP", "BR", "RU", "AU", "SG", "HK", "MX", "ZA", "NG", "ID",
    "KR", "IT", "ES", "NL",
];

/// Regions whose international call prefix is `00`.
const DIALLING_00: &[&str] = &["CN", "DE", "FR", "GB", "IN"];

/// `digits` with the separator of `seps` written after each digit, cycling.
fn separated(digits: &str, seps: &[&str]) -> String {
    digits
        .chars()
        .zip(seps.iter().cycle())
        .map(|(digit, sep)| format!("{digit}{sep}"))
        .collect()
}

fn separators() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(
        prop::sample::select(&["", "", "", " ", "-", ".", " - "][..]),
        1..6,
    )
}

/// The number as the `phonenumber` parser alone normalises it, for comparison with
/// the compiled plans.
fn by_library(raw: &str, region: Option<Id>) -> Option<String> {
    let dialled = compact_phone(raw)?;
    let international = dialled
        .strip_prefix('+')
        .or_else(|| region.and_then(|r| plan::strip_international_prefix(r, &dialled)));
    match international {
        Some(digits) => parse_with_library(None, &format!("+{digits}")).ok(),
        None => parse_with_library(Some(region?), &dialled).ok(),
    }
}

/// An example number of the metadata.
#[derive(Debug, Clone)]
struct Example {
    code: u16,
    nsn: String,
    national_prefix: &'static str,
    /// `None` for non-geographic codes such as +800.
    region: Option<Id>,
}

/// Every example number of the metadata, of the common types, sorted.
fn all_examples() -> &'static [Example] {
    static EXAMPLES: LazyLock<Vec<Example>> = LazyLock::new(|| {
        // By code rather than `DATABASE.iter()`, which holds only one of the
        // non-geographic codes (they share the region id `001`).
        let mut examples: Vec<Example> = (1..1000)
            .filter_map(|code| phonenumber::metadata::DATABASE.by_code(&code))
            .flatten()
            .flat_map(|meta| {
                let d = meta.descriptors();
                [
                    d.fixed_line(),
                    d.mobile(),
                    d.toll_free(),
                    d.premium_rate(),
                    d.voip(),
                    d.uan(),
                ]
                .into_iter()
                .flatten()
                .filter_map(|descriptor| descriptor.example())
                .map(|example| Example {
                    code: meta.country_code(),
                    nsn: example.to_string(),
                    national_prefix: meta.national_prefix().unwrap_or(""),
                    region: meta.id().parse().ok(),
                })
            })
            .collect();
        // The database is a hash map: sort for reproducible cases.
        examples.sort_by(|a, b| (a.code, &a.nsn).cmp(&(b.code, &b.nsn)));
        examples
    });
    &EXAMPLES
}

/// Example numbers of `regions` (all regions when empty), half of them with the
/// last two digits replaced, so that both valid and invalid numbers come up.
fn example_numbers(regions: &'static [&'static str]) -> impl Strategy<Value = Example> {
    let pool: Vec<&'static Example> = all_examples()
        .iter()
        .filter(|e| regions.is_empty() || e.region.is_some_and(|r| regions.contains(&r.as_ref())))
        .collect();
    (prop::sample::select(pool), 0..100u8, any::<bool>()).prop_map(|(example, tail, keep)| {
        let mut example = example.clone();
        if !keep && example.nsn.len() >= 4 {
            example.nsn.truncate(example.nsn.len() - 2);
            example.nsn.push_str(&format!("{tail:02}"));
        }
        example
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn formatting_variants_of_a_number_normalise_alike(
        Example { code, nsn, national_prefix, region: home } in example_numbers(REGIONS),
        seps in separators(),
        dialling_00 in prop::sample::select(DIALLING_00),
        any_region in prop::sample::select(REGIONS),
    ) {
        let expected = normalize_phone(&format!("+{code}{nsn}"), &PhoneRules::default()).ok();
        let home = PhoneRules { default_region: home.map(Region) };
        let variants = [
            (format!("+{code} {}", separated(&nsn, &seps)), region(any_region)),
            (format!("+{code} ({}) {}", &nsn[..3], separated(&nsn[3..], &seps)), region(any_region)),
            (format!("00 {code} {}", separated(&nsn, &seps)), region(dialling_00)),
            (separated(&format!("{national_prefix}{nsn}"), &seps), home),
        ];
        for (raw, rules) in variants {
            let got = normalize_phone(&raw, &rules).ok();
            prop_assert_eq!(&got, &expected, "{} read with {:?}", raw, rules);
        }
    }

    #[test]
    fn normalising_a_normalised_number_gives_it_back(
        Example { code, nsn, .. } in example_numbers(&[]),
        any_region in prop::sample::select(REGIONS),
    ) {
        if let Ok(e164) = normalize_phone(&format!("+{code}{nsn}"), &PhoneRules::default()) {
            prop_assert_eq!(normalize_phone(&e164, &region(any_region)), Ok(e164.clone()));
        }
    }

    #[test]
    fn compiled_plans_agree_with_the_library_on_international_numbers(
        Example { code, nsn, .. } in example_numbers(&[]),
        dialling_00 in prop::sample::select(DIALLING_00),
    ) {
        let raw = format!("+{code}{nsn}");
        prop_assert_eq!(normalize_phone(&raw, &PhoneRules::default()).ok(), by_library(&raw, None));
        let rules = region(dialling_00);
        let idd = format!("00{code}{nsn}");
        prop_assert_eq!(normalize_phone(&idd, &rules).ok(), by_library(&idd, rules.default_region.map(|Region(id)| id)));
    }

    #[test]
    fn compiled_plans_agree_with_the_library_on_national_numbers(
        Example { nsn, national_prefix, region: home, .. } in example_numbers(&[]),
        with_prefix in any::<bool>(),
    ) {
        let Some(home) = home else { return Ok(()) };
        let raw = if with_prefix { format!("{national_prefix}{nsn}") } else { nsn };
        let rules = PhoneRules { default_region: Some(Region(home)) };
        prop_assert_eq!(normalize_phone(&raw, &rules).ok(), by_library(&raw, Some(home)));
    }

    #[test]
    fn compiled_plans_agree_with_the_library_on_random_digits(
        digits in "[0-9]{1,18}",
        plus in any::<bool>(),
        home in prop::sample::select(REGIONS),
    ) {
        let raw = if plus { format!("+{digits}") } else { digits };
        let rules = region(home);
        let home = rules.default_region.map(|Region(id)| id);
        prop_assert_eq!(normalize_phone(&raw, &rules).ok(), by_library(&raw, home));
    }

    #[test]
    fn phone_normalisation_never_panics(raw in any::<String>(), home in prop::sample::select(REGIONS)) {
        let _ = normalize_phone(&raw, &region(home));
    }

    #[test]
    fn email_parsing_never_panics(raw in any::<String>()) {
        let _ = Mailbox::parse(&raw, &EmailRules::default());
    }

    #[test]
    fn parsed_mailboxes_survive_display_and_parse(
        raw in "[ a-zA-Z0-9.@<>\"\\\\,:+-]{0,12}@[a-zA-Z0-9.-]{1,12}[.][a-z]{2,4}>?"
    ) {
        if let Ok(mailbox) = Mailbox::parse(&raw, &EmailRules::default()) {
            prop_assert_eq!(Mailbox::parse(&mailbox.to_string(), &EmailRules::default()), Ok(mailbox));
        }
    }

    #[test]
    fn any_name_survives_display_and_parse(
        name in "[^\\p{Cc}]{1,24}",
        local in "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}([.][a-zA-Z0-9_-]{1,5}){0,2}",
        domain in "([a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?[.]){1,3}[a-z]{2,6}",
    ) {
        let original = Mailbox { name: Some(name.trim().to_string()), address: format!("{local}@{domain}") };
        prop_assume!(!name.trim().is_empty());
        prop_assume!(!LOCAL_NAMES.iter().any(|local| domain.ends_with(&format!(".{local}"))));
        prop_assert_eq!(Mailbox::parse(&original.to_string(), &EmailRules::default()), Ok(original));
    }
}

#[test]
fn the_key_of_a_stored_address_is_the_number_or_the_bare_mailbox() {
    assert_eq!(
        address_key(Channel::Sms, "+8613800138000"),
        "+8613800138000"
    );
    assert_eq!(
        address_key(Channel::Email, "Li Lei <li@shop.example>"),
        "li@shop.example"
    );
    assert_eq!(address_key(Channel::Email, "ops@mailhost"), "ops@mailhost");
}
