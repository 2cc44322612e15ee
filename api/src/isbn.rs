//! ISBN-13 validation and generation.
//!
//! An ISBN-13 is thirteen digits, optionally grouped with hyphens or spaces,
//! whose last digit is a check digit: the weighted sum of all thirteen digits
//! with alternating weights 1 and 3 is a multiple of ten. Bazar stores ISBNs
//! normalized to the bare thirteen digits.

use std::fmt;

/// Why a string is not a valid ISBN-13.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsbnError {
    /// A character other than a digit, a hyphen or a space.
    InvalidCharacter(char),
    /// Not exactly thirteen digits.
    WrongLength(usize),
    /// Does not start with the GS1 prefix 978 or 979.
    WrongPrefix,
    /// The check digit does not match.
    BadCheckDigit {
        /// The check digit the first twelve digits call for.
        expected: u8,
        /// The check digit given.
        found: u8,
    },
}

impl fmt::Display for IsbnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsbnError::InvalidCharacter(c) => write!(f, "invalid character {c:?} in ISBN"),
            IsbnError::WrongLength(n) => write!(f, "an ISBN-13 has 13 digits, not {n}"),
            IsbnError::WrongPrefix => write!(f, "an ISBN-13 starts with 978 or 979"),
            IsbnError::BadCheckDigit { expected, found } => {
                write!(f, "bad ISBN-13 check digit: expected {expected}, found {found}")
            }
        }
    }
}

impl std::error::Error for IsbnError {}

/// Validates an ISBN-13 and returns it normalized to thirteen bare digits.
pub fn normalize(input: &str) -> Result<String, IsbnError> {
    let mut digits = Vec::with_capacity(13);
    for c in input.trim().chars() {
        match c {
            '0'..='9' => digits.push(c as u8 - b'0'),
            '-' | ' ' => {}
            other => return Err(IsbnError::InvalidCharacter(other)),
        }
    }
    if digits.len() != 13 {
        return Err(IsbnError::WrongLength(digits.len()));
    }
    if !(digits[..3] == [9, 7, 8] || digits[..3] == [9, 7, 9]) {
        return Err(IsbnError::WrongPrefix);
    }
    let expected = check_digit(&digits[..12]);
    if expected != digits[12] {
        return Err(IsbnError::BadCheckDigit { expected, found: digits[12] });
    }
    Ok(digits.iter().map(|d| char::from(b'0' + d)).collect())
}

/// The ISBN-13 check digit of the first twelve digits.
fn check_digit(first12: &[u8]) -> u8 {
    let sum: u32 = first12.iter().enumerate().map(|(i, &d)| u32::from(d) * if i % 2 == 0 { 1 } else { 3 }).sum();
    ((10 - sum % 10) % 10) as u8
}

/// A valid ISBN-13 derived from a number: `978` followed by the number's last
/// nine digits (zero-padded) and the check digit. Distinct numbers below one
/// billion give distinct ISBNs, which is what synthetic catalogs need.
pub fn from_number(n: u64) -> String {
    let body = format!("978{:09}", n % 1_000_000_000);
    let digits: Vec<u8> = body.bytes().map(|b| b - b'0').collect();
    format!("{body}{}", check_digit(&digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_known_isbns_with_and_without_hyphens() {
        assert_eq!(normalize("978-0-306-40615-7").unwrap(), "9780306406157");
        assert_eq!(normalize("9780306406157").unwrap(), "9780306406157");
        assert_eq!(normalize(" 979 10 90636 07 1 ").unwrap(), "9791090636071");
    }

    #[test]
    fn rejects_bad_check_digit_length_prefix_and_characters() {
        assert_eq!(normalize("9780306406158"), Err(IsbnError::BadCheckDigit { expected: 7, found: 8 }));
        assert_eq!(normalize("978030640615"), Err(IsbnError::WrongLength(12)));
        assert_eq!(normalize("1230306406157"), Err(IsbnError::WrongPrefix));
        assert_eq!(normalize("978030640615X"), Err(IsbnError::InvalidCharacter('X')));
        assert_eq!(normalize(""), Err(IsbnError::WrongLength(0)));
    }

    #[test]
    fn generated_isbns_are_valid_and_distinct() {
        let a = from_number(1);
        let b = from_number(2);
        let c = from_number(999_999_999);
        for isbn in [&a, &b, &c] {
            assert_eq!(&normalize(isbn).unwrap(), isbn);
        }
        assert_ne!(a, b);
    }
}
