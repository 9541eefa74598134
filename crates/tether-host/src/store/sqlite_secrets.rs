//! The SQLite store's secrets: the check that the key is the one that
//! sealed the store, re-sealing plaintext, and key rotation.

use std::collections::BTreeMap;

use sqlx::Row;

use super::instance_row::{headers_text, parse_headers};

use super::secrets::{seal_with, SecretKey, Secrets};
use super::sqlite::SqliteStore;
use super::StoreError;
use crate::host::is_secret_header;

use super::secrets::{KEY_CHECK, KEY_CHECK_TEXT};

impl SqliteStore {
    /// Re-seals every secret under `to`: values sealed under `from` (or in
    /// plaintext, when `from` is `None`) are opened and sealed again, in one
    /// transaction. Returns how many instances changed.
    pub(super) async fn reseal(
        &self,
        from: Option<&SecretKey>,
        to: &SecretKey,
    ) -> Result<usize, StoreError> {
        // Plaintext values pass through `open`; sealed ones open under
        // `from`, or, when sealing a plaintext store, under `to` itself.
        let old = Secrets::Sealed(from.unwrap_or(to).clone());
        let new = Secrets::Sealed(to.clone());
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query("SELECT key, url, password, headers FROM instances")
            .fetch_all(&mut *tx)
            .await?;
        let mut changed = 0;
        for row in &rows {
            let key: String = row.try_get("key")?;
            let url: String = row.try_get("url")?;
            let password: Option<String> = row.try_get("password")?;
            let headers: String = row.try_get("headers")?;
            let needs = |v: &str| from.is_some() || !Secrets::is_sealed(v);
            let url_secret = url_has_password(&old.open(&url)?);
            let touch = (url_secret && needs(&url))
                || password.as_deref().is_some_and(needs)
                || parse_headers(&headers)?
                    .iter()
                    .any(|(n, v)| is_secret_header(n) && needs(v));
            if !touch {
                continue;
            }
            let url = self::reseal_value(&old, &new, &url, url_secret)?;
            let password = password
                .map(|p| self::reseal_value(&old, &new, &p, true))
                .transpose()?;
            let headers: BTreeMap<String, String> = parse_headers(&headers)?
                .into_iter()
                .map(|(n, v)| {
                    let secret = is_secret_header(&n);
                    Ok((n, self::reseal_value(&old, &new, &v, secret)?))
                })
                .collect::<Result<_, StoreError>>()?;
            sqlx::query("UPDATE instances SET url = ?, password = ?, headers = ? WHERE key = ?")
                .bind(url)
                .bind(password)
                .bind(headers_text(&headers))
                .bind(&key)
                .execute(&mut *tx)
                .await?;
            changed += 1;
        }
        sqlx::query("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value")
            .bind(KEY_CHECK)
            .bind(seal_with(to, KEY_CHECK_TEXT))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// `tether secrets rotate`: re-seals everything under `new`. The store
    /// must have been opened with its current key.
    pub async fn rotate(&self, new: &SecretKey) -> Result<usize, StoreError> {
        let Secrets::Sealed(current) = &self.secrets else {
            return Err(StoreError::Secret(super::SecretError::WrongKey(
                "rotating needs the current key in TETHER_SECRET_KEY".into(),
            )));
        };
        self.reseal(Some(current), new).await
    }
}

fn reseal_value(
    old: &Secrets,
    new: &Secrets,
    stored: &str,
    secret: bool,
) -> Result<String, StoreError> {
    let value = old.open(stored)?;
    Ok(if secret {
        new.seal(&value, "a secret")?
    } else {
        value
    })
}

pub(super) fn url_has_password(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.password().is_some())
}
