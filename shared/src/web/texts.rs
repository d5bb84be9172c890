//! Page texts: Russian by default, English when the browser prefers it.

use axum::http::HeaderMap;

pub struct Texts {
    pub lang: &'static str,
    pub app_name: &'static str,
    pub landing_title: &'static str,
    pub landing_text: &'static str,
    pub login_button: &'static str,
    pub signed_in_as: &'static str,
    pub open_dashboard: &'static str,
    pub twitch_heading: &'static str,
    pub twitch_connected: &'static str,
    pub twitch_need_reauth: &'static str,
    pub scopes_label: &'static str,
    /// Before the list of configured scopes the stored token lacks.
    pub scopes_missing: &'static str,
    pub scopes_relogin_button: &'static str,
    pub donationalerts_connected: &'static str,
    pub donationalerts_need_reauth: &'static str,
    pub donationalerts_not_connected: &'static str,
    pub donationalerts_connect_button: &'static str,
    pub donationalerts_reconnect_button: &'static str,
    pub donationalerts_disconnect_button: &'static str,
    /// While connected with a grant that lacks realtime alerts (polled, not pushed).
    pub donationalerts_realtime_missing: &'static str,
    pub donationalerts_realtime_button: &'static str,
    pub latest_donations: &'static str,
    pub no_donations_yet: &'static str,
    pub anonymous_donor: &'static str,
    pub logout_button: &'static str,
    pub disconnect_button: &'static str,
    /// Beside the Twitch disconnect button while DonationAlerts is connected.
    pub disconnect_also_donationalerts: &'static str,
    pub not_configured_title: &'static str,
    pub not_configured_register: &'static str,
    pub not_configured_variables: &'static str,
    pub not_configured_demo: &'static str,
    pub error_code: &'static str,
    pub try_again: &'static str,
    pub back_home: &'static str,
}

pub const RU: Texts = Texts {
    lang: "ru",
    app_name: "Avatar",
    landing_title: "Аватар для стрима",
    landing_text: "Войдите через Twitch, чтобы подключить чат-бота и оповещения о донатах.",
    login_button: "Вход",
    signed_in_as: "Вы вошли как",
    open_dashboard: "Открыть панель",
    twitch_heading: "Twitch",
    twitch_connected: "Подключён: бот может читать чат от вашего имени.",
    twitch_need_reauth: "Нужно войти заново: Twitch больше не принимает сохранённый токен.",
    scopes_label: "Разрешения",
    scopes_missing: "Сохранённому токену не хватает разрешений, которые нужны ботам:",
    scopes_relogin_button: "Войти заново и выдать разрешения",
    donationalerts_connected: "Подключено: донаты приходят в оверлей и чат-боту.",
    donationalerts_need_reauth: "Нужно подключить заново: DonationAlerts больше не принимает сохранённый доступ.",
    donationalerts_not_connected: "Не подключено",
    donationalerts_connect_button: "Подключить DonationAlerts",
    donationalerts_reconnect_button: "Подключить заново",
    donationalerts_disconnect_button: "Отключить DonationAlerts",
    donationalerts_realtime_missing: "Переподключите DonationAlerts, чтобы донаты приходили мгновенно: пока они проверяются периодически и могут приходить с опозданием.",
    donationalerts_realtime_button: "Переподключить DonationAlerts",
    latest_donations: "Последние донаты",
    no_donations_yet: "Пока ни одного: новые донаты появятся здесь через несколько секунд.",
    anonymous_donor: "Аноним",
    logout_button: "Выйти",
    disconnect_button: "Отключить Twitch",
    disconnect_also_donationalerts: "Отключение Twitch отключит и DonationAlerts: донаты перестанут приходить.",
    not_configured_title: "Вход через Twitch ещё не настроен. Два пути:",
    not_configured_register: "зарегистрируйте приложение на",
    not_configured_variables: "и задайте",
    not_configured_demo: "или посмотрите всё в работе без учётных данных и сети:",
    error_code: "Код ошибки",
    try_again: "Попробовать снова",
    back_home: "На главную",
};

pub(crate) const EN: Texts = Texts {
    lang: "en",
    app_name: "Avatar",
    landing_title: "Your stream avatar",
    landing_text: "Log in with Twitch to connect the chat bot and donation alerts.",
    login_button: "Log in",
    signed_in_as: "You are logged in as",
    open_dashboard: "Open the dashboard",
    twitch_heading: "Twitch",
    twitch_connected: "Connected: the bot can read chat on your behalf.",
    twitch_need_reauth: "Please log in again: Twitch no longer accepts the stored token.",
    scopes_label: "Permissions",
    scopes_missing: "The stored token lacks permissions the bots need:",
    scopes_relogin_button: "Log in again to grant them",
    donationalerts_connected: "Connected: donations reach the overlay and the chat bot.",
    donationalerts_need_reauth: "Please connect again: DonationAlerts no longer accepts the stored access.",
    donationalerts_not_connected: "Not connected",
    donationalerts_connect_button: "Connect DonationAlerts",
    donationalerts_reconnect_button: "Connect again",
    donationalerts_disconnect_button: "Disconnect DonationAlerts",
    donationalerts_realtime_missing: "Reconnect DonationAlerts for realtime alerts: for now donations are checked periodically and may arrive late.",
    donationalerts_realtime_button: "Reconnect DonationAlerts",
    latest_donations: "Latest donations",
    no_donations_yet: "None yet: new donations show up here within seconds.",
    anonymous_donor: "Anonymous",
    logout_button: "Log out",
    disconnect_button: "Disconnect Twitch",
    disconnect_also_donationalerts: "Disconnecting Twitch also disconnects DonationAlerts: donations stop being received.",
    not_configured_title: "Twitch login is not configured yet. Two ways forward:",
    not_configured_register: "register an application at",
    not_configured_variables: "and set",
    not_configured_demo: "or see everything work with no credentials and no network:",
    error_code: "Error code",
    try_again: "Try again",
    back_home: "Home",
};

/// English when the most preferred language of `Accept-Language` that we speak is English;
/// Russian otherwise (the default audience).
pub(crate) fn negotiate(headers: &HeaderMap) -> &'static Texts {
    let Some(header) = headers
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
    else {
        return &RU;
    };
    let mut best: Option<(f32, &'static Texts)> = None;
    for part in header.split(',').take(20) {
        let mut pieces = part.split(';');
        let tag = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = pieces
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let texts = match tag.split('-').next() {
            Some("en") => &EN,
            Some("ru") => &RU,
            _ => continue,
        };
        if quality > 0.0 && best.is_none_or(|(q, _)| quality > q) {
            best = Some((quality, texts));
        }
    }
    best.map_or(&RU, |(_, texts)| texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(header: &str) -> &'static str {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::ACCEPT_LANGUAGE, header.parse().unwrap());
        negotiate(&headers).lang
    }

    #[test]
    fn russian_unless_english_is_preferred() {
        assert_eq!(negotiate(&HeaderMap::new()).lang, "ru");
        assert_eq!(lang("en-US,en;q=0.9"), "en");
        assert_eq!(lang("ru-RU,ru;q=0.9,en;q=0.8"), "ru");
        assert_eq!(lang("de-DE,en;q=0.5"), "en");
        assert_eq!(lang("en;q=0.3,ru;q=0.7"), "ru");
        assert_eq!(lang("fr,de"), "ru");
        assert_eq!(lang("en;q=0"), "ru");
    }
}
