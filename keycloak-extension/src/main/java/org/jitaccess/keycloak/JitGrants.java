package org.jitaccess.keycloak;

import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

import com.fasterxml.jackson.databind.JsonNode;

import org.jboss.logging.Logger;
import org.keycloak.models.UserModel;
import org.keycloak.util.JsonSerialization;

/**
 * The JIT grants jitd wrote on a user: the user attribute {@link #DEFAULT_ATTRIBUTE}
 * (configurable), one value per grant, each a JSON object
 * {@code {"grant":"<request id>","entitlement":"<entitlement id>",
 * "target":{"kind":"realm_role","role":"..."}|{"kind":"client_role","client":"<clientId>","role":"..."}|{"kind":"group","path":"/..."},
 * "expires_at":"<RFC 3339, UTC>"}}.
 *
 * <p>jitd writes the value when it grants, moves {@code expires_at} when it extends or
 * ends the grant early, and removes the value once the role or membership has left
 * Keycloak. Only Keycloak's own data is read: no call to jitd during a login.
 *
 * <p>Fail-safe: a value that is not such an object is skipped and logged (the token then
 * falls back to the realm's normal lifetime for it); it never breaks a login.
 */
public final class JitGrants {
    /** Default name of the user attribute jitd writes. */
    public static final String DEFAULT_ATTRIBUTE = "jit.grants";

    private static final Logger LOG = Logger.getLogger(JitGrants.class);

    private JitGrants() {}

    /** A grant's Keycloak target: exactly one realm role, client role or group. */
    public record Target(String kind, String client, String role, String path) {
        /** A stable key: two grants of the same target share it. */
        public String key() {
            return kind + "\u0000" + Objects.toString(client, "") + "\u0000" + Objects.toString(role, "")
                    + "\u0000" + Objects.toString(path, "");
        }

        /** The target as the claim shows it (same shape as jitd's API). */
        public Map<String, Object> toClaim() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("kind", kind);
            if (client != null) m.put("client", client);
            if (role != null) m.put("role", role);
            if (path != null) m.put("path", path);
            return m;
        }
    }

    /**
     * One grant. {@code expiresAt} is when access ends (UTC); {@code expiresAtText} is the
     * value exactly as jitd wrote it, echoed in the claim.
     */
    public record Grant(String grant, String entitlement, Target target, Instant expiresAt, String expiresAtText) {
        /** Whether the grant is still running at {@code nowMillis} (epoch milliseconds). */
        public boolean activeAt(long nowMillis) {
            return expiresAt.toEpochMilli() > nowMillis;
        }

        /** The claim entry: grant, entitlement, target, expires_at. */
        public Map<String, Object> toClaim() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("grant", grant);
            m.put("entitlement", entitlement);
            m.put("target", target.toClaim());
            m.put("expires_at", expiresAtText);
            return m;
        }
    }

    /**
     * The well-formed grants in the user's attribute {@code attribute}; an empty list when
     * the attribute is missing. Malformed values are skipped and logged (WARN, with the
     * user id, never the value's content beyond 200 characters).
     */
    public static List<Grant> read(UserModel user, String attribute) {
        List<String> values = user.getAttributeStream(attribute).toList();
        if (values.isEmpty()) {
            return Collections.emptyList();
        }
        List<Grant> out = new ArrayList<>(values.size());
        for (String v : values) {
            try {
                out.add(parse(v));
            } catch (IllegalArgumentException e) {
                String shown = v == null ? "null" : v.length() > 200 ? v.substring(0, 200) + "..." : v;
                LOG.warnf("JIT: ignoring malformed value of attribute %s on user %s (%s): %s;"
                        + " this grant does not bound the token lifetime", attribute, user.getId(), e.getMessage(), shown);
            }
        }
        return out;
    }

    /**
     * Parses one attribute value. Errors: {@link IllegalArgumentException} saying what is
     * wrong (not JSON, a missing field, an unknown target kind, a bad timestamp).
     */
    public static Grant parse(String value) {
        if (value == null || value.isBlank()) {
            throw new IllegalArgumentException("empty value");
        }
        JsonNode n;
        try {
            n = JsonSerialization.readValue(value, JsonNode.class);
        } catch (Exception e) {
            throw new IllegalArgumentException("not JSON");
        }
        if (n == null || !n.isObject()) {
            throw new IllegalArgumentException("not a JSON object");
        }
        String grant = text(n, "grant");
        String entitlement = text(n, "entitlement");
        String expires = text(n, "expires_at");
        JsonNode t = n.get("target");
        if (t == null || !t.isObject()) {
            throw new IllegalArgumentException("missing target");
        }
        String kind = text(t, "kind");
        Target target = switch (kind) {
            case "realm_role" -> new Target(kind, null, text(t, "role"), null);
            case "client_role" -> new Target(kind, text(t, "client"), text(t, "role"), null);
            case "group" -> new Target(kind, null, null, text(t, "path"));
            default -> throw new IllegalArgumentException("unknown target kind " + kind);
        };
        Instant at;
        try {
            at = java.time.OffsetDateTime.parse(expires).toInstant();
        } catch (DateTimeParseException e) {
            throw new IllegalArgumentException("expires_at is not RFC 3339");
        }
        return new Grant(grant, entitlement, target, at, expires);
    }

    private static String text(JsonNode n, String field) {
        JsonNode v = n.get(field);
        if (v == null || !v.isTextual() || v.asText().isEmpty()) {
            throw new IllegalArgumentException("missing " + field);
        }
        return v.asText();
    }
}
