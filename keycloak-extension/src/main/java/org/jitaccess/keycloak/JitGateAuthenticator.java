package org.jitaccess.keycloak;

import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.Map;

import jakarta.ws.rs.core.Response;

import org.jboss.logging.Logger;
import org.keycloak.authentication.AuthenticationFlowContext;
import org.keycloak.authentication.AuthenticationFlowError;
import org.keycloak.authentication.Authenticator;
import org.keycloak.common.util.Time;
import org.keycloak.models.AuthenticatorConfigModel;
import org.keycloak.models.ClientModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.RealmModel;
import org.keycloak.models.GroupModel;
import org.keycloak.models.RoleModel;
import org.keycloak.models.UserModel;
import org.keycloak.models.utils.KeycloakModelUtils;

/**
 * Login gate for JIT-protected clients ({@link JitGateAuthenticatorFactory}).
 *
 * <p>A client is protected when its attribute {@value #CLIENT_ATTRIBUTE} names an
 * entitlement id, or when this execution's config names one ({@value #CONFIG_ENTITLEMENT},
 * for flows bound to one client). A user holding a running JIT grant of that entitlement
 * (in the attribute jitd writes, see {@link JitGrants}) whose role or group Keycloak really
 * shows on the user passes; anyone else gets the page
 * {@value #TEMPLATE} in the realm's login theme saying which access is needed and how to ask
 * for it ({@code jit request ...} and a {@code jit://request?entitlement=...} link), with a
 * "Try again" button. Clients that are not protected pass untouched. Reads only Keycloak's
 * own data.
 */
public class JitGateAuthenticator implements Authenticator {
    /** Client attribute naming the entitlement a login to that client needs. */
    public static final String CLIENT_ATTRIBUTE = "jit.required-entitlement";
    /** Authenticator config key: the entitlement (when the client has no attribute). */
    public static final String CONFIG_ENTITLEMENT = "entitlement";
    /** Authenticator config key: the user attribute jitd writes. */
    public static final String CONFIG_ATTRIBUTE = "attribute";
    /** The FreeMarker template shipped in the jar (theme-resources/templates). */
    public static final String TEMPLATE = "jit-access-required.ftl";

    private static final Logger LOG = Logger.getLogger(JitGateAuthenticator.class);

    @Override
    public void authenticate(AuthenticationFlowContext context) {
        ClientModel client = context.getAuthenticationSession().getClient();
        Map<String, String> config = config(context);
        String entitlement = client.getAttribute(CLIENT_ATTRIBUTE);
        if (entitlement == null || entitlement.isBlank()) {
            entitlement = config.get(CONFIG_ENTITLEMENT);
        }
        if (entitlement == null || entitlement.isBlank()) {
            context.success();
            return;
        }
        entitlement = entitlement.trim();
        UserModel user = context.getUser();
        String attribute = config.getOrDefault(CONFIG_ATTRIBUTE, JitGrants.DEFAULT_ATTRIBUTE);
        long now = Time.currentTimeMillis();
        final String wanted = entitlement;
        RealmModel realm = context.getRealm();
        KeycloakSession session = context.getSession();
        boolean granted = user != null && JitGrants.read(user, attribute).stream()
                .anyMatch(g -> g.entitlement().equals(wanted) && g.activeAt(now)
                        && holds(session, realm, user, g.target()));
        if (granted) {
            context.success();
            return;
        }
        LOG.infof("JIT gate: user %s has no running grant of %s; login to client %s refused",
                user == null ? "-" : user.getUsername(), entitlement, client.getClientId());
        String link = "jit://request?entitlement=" + URLEncoder.encode(entitlement, StandardCharsets.UTF_8);
        String clientName = client.getName() != null && !client.getName().isBlank() ? client.getName()
                : client.getClientId();
        Response page = context.form()
                .setAttribute("jitEntitlement", entitlement)
                .setAttribute("jitClient", clientName)
                .setAttribute("jitCommand", "jit request " + entitlement + " --reason \"<why you need it>\" --wait")
                .setAttribute("jitLink", link)
                .createForm(TEMPLATE);
        context.getEvent().detail("jit_required_entitlement", entitlement);
        context.failureChallenge(AuthenticationFlowError.ACCESS_DENIED, page);
    }

    /**
     * Whether the user really holds the grant's target in Keycloak: the attribute alone
     * (should a realm let users edit it) never opens the gate.
     */
    private static boolean holds(KeycloakSession session, RealmModel realm, UserModel user, JitGrants.Target t) {
        if ("group".equals(t.kind())) {
            GroupModel g = KeycloakModelUtils.findGroupByPath(session, realm, t.path());
            return g != null && user.isMemberOf(g);
        }
        RoleModel r = JitGrantMapper.role(realm, t);
        return r != null && user.hasRole(r);
    }

    /** "Try again" on the page: check once more (the grant may have started meanwhile). */
    @Override
    public void action(AuthenticationFlowContext context) {
        authenticate(context);
    }

    private static Map<String, String> config(AuthenticationFlowContext context) {
        AuthenticatorConfigModel m = context.getAuthenticatorConfig();
        return m == null || m.getConfig() == null ? Map.of() : m.getConfig();
    }

    @Override
    public boolean requiresUser() {
        return true;
    }

    @Override
    public boolean configuredFor(KeycloakSession session, RealmModel realm, UserModel user) {
        return true;
    }

    @Override
    public void setRequiredActions(KeycloakSession session, RealmModel realm, UserModel user) {}

    @Override
    public void close() {}
}
