//! The in-memory property store and validation of new listings.

use serde::Serialize;
use serde_json::{Map, Value};

/// A real-estate listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Property {
    /// Unique, increasing identifier assigned by the store.
    pub id: u64,
    /// Short headline of the listing.
    pub title: String,
    /// City the property is in.
    pub city: String,
    /// Asking price in whole currency units.
    pub price: u64,
    /// Number of bedrooms.
    pub bedrooms: u32,
}

/// The fields of a listing before the store assigns it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProperty {
    /// Short headline of the listing; never blank.
    pub title: String,
    /// City the property is in; never blank.
    pub city: String,
    /// Asking price in whole currency units.
    pub price: u64,
    /// Number of bedrooms.
    pub bedrooms: u32,
}

/// Criteria for listing properties; `None` fields do not filter.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Keep only properties in this city (case-insensitive exact match).
    pub city: Option<String>,
    /// Keep only properties priced at or below this.
    pub max_price: Option<u64>,
}

/// All listings, kept in id order.
#[derive(Debug)]
pub struct Store {
    /// The listings, sorted by id.
    properties: Vec<Property>,
    /// The id the next inserted listing will get.
    next_id: u64,
}

impl Store {
    /// A store holding a handful of sample listings.
    pub fn seeded() -> Self {
        let mut store = Self {
            properties: Vec::new(),
            next_id: 1,
        };
        let seed = [
            ("Sunny two-bed flat near the park", "London", 450_000, 2),
            ("Victorian terrace with garden", "Manchester", 320_000, 3),
            ("Canal-side studio", "Amsterdam", 275_000, 1),
            ("Family house with double garage", "Lyon", 510_000, 4),
            ("Penthouse with city views", "London", 1_250_000, 3),
        ];
        for (title, city, price, bedrooms) in seed {
            store.insert(NewProperty {
                title: title.to_owned(),
                city: city.to_owned(),
                price,
                bedrooms,
            });
        }
        store
    }

    /// The listings matching `filter`, in id order.
    pub fn list(&self, filter: &Filter) -> Vec<Property> {
        let city = filter.city.as_deref().map(str::to_lowercase);
        self.properties
            .iter()
            .filter(|p| city.as_ref().is_none_or(|c| p.city.to_lowercase() == *c))
            .filter(|p| filter.max_price.is_none_or(|max| p.price <= max))
            .cloned()
            .collect()
    }

    /// The listing with this id, if any.
    pub fn get(&self, id: u64) -> Option<Property> {
        self.properties.iter().find(|p| p.id == id).cloned()
    }

    /// Stores a new listing under the next id and returns it.
    pub fn insert(&mut self, new: NewProperty) -> Property {
        let property = Property {
            id: self.next_id,
            title: new.title,
            city: new.city,
            price: new.price,
            bedrooms: new.bedrooms,
        };
        self.next_id += 1;
        self.properties.push(property.clone());
        property
    }
}

impl NewProperty {
    /// Parses and validates a JSON request body, describing the first problem found.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("invalid json: {e}"))?;
        let Value::Object(fields) = value else {
            return Err("request body must be a json object".to_owned());
        };
        let bedrooms = integer_field(&fields, "bedrooms")?;
        Ok(Self {
            title: text_field(&fields, "title")?,
            city: text_field(&fields, "city")?,
            price: integer_field(&fields, "price")?,
            bedrooms: u32::try_from(bedrooms)
                .map_err(|_| format!("bedrooms must be at most {}", u32::MAX))?,
        })
    }
}

/// A required, non-blank string field.
fn text_field(fields: &Map<String, Value>, name: &str) -> Result<String, String> {
    match fields.get(name) {
        None => Err(format!("missing field: {name}")),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("{name} must be a non-empty string")),
    }
}

/// A required non-negative integer field.
fn integer_field(fields: &Map<String, Value>, name: &str) -> Result<u64, String> {
    let value = fields
        .get(name)
        .ok_or_else(|| format!("missing field: {name}"))?;
    value
        .as_u64()
        .ok_or_else(|| format!("{name} must be a non-negative integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_city_case_insensitively_and_price() {
        let store = Store::seeded();
        let london = store.list(&Filter {
            city: Some("lONDON".to_owned()),
            max_price: None,
        });
        assert_eq!(london.len(), 2);
        let cheap_london = store.list(&Filter {
            city: Some("london".to_owned()),
            max_price: Some(500_000),
        });
        assert_eq!(cheap_london.len(), 1);
        assert_eq!(store.list(&Filter::default()).len(), 5);
    }

    #[test]
    fn insert_assigns_increasing_ids() {
        let mut store = Store::seeded();
        let new = NewProperty::from_json(br#"{"title":"t","city":"c","price":1,"bedrooms":0}"#)
            .expect("valid body");
        let first = store.insert(new.clone());
        let second = store.insert(new);
        assert_eq!(first.id, 6);
        assert_eq!(second.id, 7);
        assert_eq!(store.get(7), Some(second));
    }

    #[test]
    fn rejects_bad_bodies() {
        let err = |body: &str| NewProperty::from_json(body.as_bytes()).unwrap_err();
        assert!(err("nope").starts_with("invalid json"));
        assert_eq!(err("[]"), "request body must be a json object");
        assert_eq!(
            err(r#"{"city":"c","price":1,"bedrooms":1}"#),
            "missing field: title"
        );
        assert_eq!(
            err(r#"{"title":" ","city":"c","price":1,"bedrooms":1}"#),
            "title must be a non-empty string"
        );
        assert_eq!(
            err(r#"{"title":"t","city":"c","price":-1,"bedrooms":1}"#),
            "price must be a non-negative integer"
        );
        assert_eq!(
            err(r#"{"title":"t","city":"c","price":1,"bedrooms":5000000000}"#),
            "bedrooms must be at most 4294967295"
        );
    }
}
