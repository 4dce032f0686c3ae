package org.jitaccess.keycloak;

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;

import org.jboss.logging.Logger;
import org.keycloak.common.util.Time;
import org.keycloak.models.ClientModel;
import org.keycloak.models.ClientSessionContext;
import org.keycloak.models.GroupModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.ProtocolMapperModel;
import org.keycloak.models.RealmModel;
import org.keycloak.models.RoleModel;
import org.keycloak.models.UserModel;
import org.keycloak.models.UserSessionModel;
import org.keycloak.models.utils.KeycloakModelUtils;
import org.keycloak.models.utils.ModelToRepresentation;
import org.keycloak.models.utils.RoleUtils;
import org.keycloak.protocol.oidc.mappers.AbstractOIDCProtocolMapper;
import org.keycloak.protocol.oidc.mappers.OIDCAccessTokenMapper;
import org.keycloak.protocol.oidc.mappers.OIDCAttributeMapperHelper;
import org.keycloak.protocol.oidc.mappers.OIDCIDTokenMapper;
import org.keycloak.protocol.oidc.mappers.TokenIntrospectionTokenMapper;
import org.keycloak.protocol.oidc.mappers.UserInfoTokenMapper;
import org.keycloak.provider.ProviderConfigProperty;
import org.keycloak.representations.AccessToken;
import org.keycloak.representations.IDToken;

/**
 * Protocol mapper "JIT grant bounds" ({@value #PROVIDER_ID}).
 *
 * <p>For a user holding JIT grants (the attribute jitd writes, see {@link JitGrants}):
 * <ul>
 * <li>the access token's and ID token's {@code exp} (hence the token response's
 * {@code expires_in}) is no later than the earliest {@code expires_at} among the running
 * grants whose role or group the client session carries;</li>
 * <li>the claim {@value #DEFAULT_CLAIM} lists those grants (grant, entitlement, target,
 * expires_at);</li>
 * <li>a role or group whose grants have all ended is left out of every token (access,
 * ID, userinfo, introspection) even while jitd has not yet removed the mapping from
 * Keycloak; roles the user holds another way (directly, via another group, a
 * composite) stay.</li>
 * </ul>
 * A user without the attribute is untouched. It runs after the role and group mappers
 * (priority {@value #PRIORITY}).
 */
public class JitGrantMapper extends AbstractOIDCProtocolMapper
        implements OIDCAccessTokenMapper, OIDCIDTokenMapper, UserInfoTokenMapper, TokenIntrospectionTokenMapper {

    /** Provider id, used in realm JSON ({@code "protocolMapper": "oidc-jit-grant-mapper"}). */
    public static final String PROVIDER_ID = "oidc-jit-grant-mapper";
    /** Config key: name of the user attribute jitd writes. */
    public static final String CONFIG_ATTRIBUTE = "jit.attribute";
    /** Config key: name of the claim listing the running grants. */
    public static final String CONFIG_CLAIM = "claim.name";
    /** Default claim name. */
    public static final String DEFAULT_CLAIM = "jit_grants";
    /** After the role (40), script (50) and group mappers. */
    public static final int PRIORITY = 1000;

    private static final Logger LOG = Logger.getLogger(JitGrantMapper.class);
    private static final List<ProviderConfigProperty> CONFIG = new ArrayList<>();

    static {
        ProviderConfigProperty attr = new ProviderConfigProperty();
        attr.setName(CONFIG_ATTRIBUTE);
        attr.setLabel("Grants attribute");
        attr.setType(ProviderConfigProperty.STRING_TYPE);
        attr.setDefaultValue(JitGrants.DEFAULT_ATTRIBUTE);
        attr.setHelpText("User attribute jitd writes the grant ends to (jitd's keycloak.grants_attribute).");
        CONFIG.add(attr);
        ProviderConfigProperty claim = new ProviderConfigProperty();
        claim.setName(CONFIG_CLAIM);
        claim.setLabel("Claim name");
        claim.setType(ProviderConfigProperty.STRING_TYPE);
        claim.setDefaultValue(DEFAULT_CLAIM);
        claim.setHelpText("Claim listing the running JIT grants the token carries.");
        CONFIG.add(claim);
        OIDCAttributeMapperHelper.addIncludeInTokensConfig(CONFIG, JitGrantMapper.class);
    }

    @Override
    public String getId() {
        return PROVIDER_ID;
    }

    @Override
    public String getDisplayType() {
        return "JIT grant bounds";
    }

    @Override
    public String getDisplayCategory() {
        return TOKEN_MAPPER_CATEGORY;
    }

    @Override
    public String getHelpText() {
        return "Tokens of users holding JIT grants expire no later than the grant ends; ended JIT roles and"
                + " groups are left out; a claim lists the running grants.";
    }

    @Override
    public List<ProviderConfigProperty> getConfigProperties() {
        return CONFIG;
    }

    @Override
    public int getPriority() {
        return PRIORITY;
    }

    @Override
    public AccessToken transformAccessToken(AccessToken token, ProtocolMapperModel model, KeycloakSession session,
            UserSessionModel userSession, ClientSessionContext ctx) {
        apply(token, model, session, userSession, ctx, true, OIDCAttributeMapperHelper.includeInAccessToken(model));
        return token;
    }

    @Override
    public IDToken transformIDToken(IDToken token, ProtocolMapperModel model, KeycloakSession session,
            UserSessionModel userSession, ClientSessionContext ctx) {
        apply(token, model, session, userSession, ctx, true, OIDCAttributeMapperHelper.includeInIDToken(model));
        return token;
    }

    @Override
    public AccessToken transformUserInfoToken(AccessToken token, ProtocolMapperModel model, KeycloakSession session,
            UserSessionModel userSession, ClientSessionContext ctx) {
        apply(token, model, session, userSession, ctx, false, OIDCAttributeMapperHelper.includeInUserInfo(model));
        return token;
    }

    @Override
    public AccessToken transformIntrospectionToken(AccessToken token, ProtocolMapperModel model,
            KeycloakSession session, UserSessionModel userSession, ClientSessionContext ctx) {
        apply(token, model, session, userSession, ctx, false,
                OIDCAttributeMapperHelper.includeInIntrospection(model));
        return token;
    }

    /**
     * Applies the rules to one token. {@code bound}: cap {@code exp} (access and ID
     * tokens); {@code withClaim}: add the claim. Never throws: an unexpected error is
     * logged and the token is left as the other mappers made it.
     */
    private void apply(IDToken token, ProtocolMapperModel model, KeycloakSession session,
            UserSessionModel userSession, ClientSessionContext ctx, boolean bound, boolean withClaim) {
        UserModel user = userSession.getUser();
        String attribute = model.getConfig().getOrDefault(CONFIG_ATTRIBUTE, JitGrants.DEFAULT_ATTRIBUTE);
        List<JitGrants.Grant> grants = JitGrants.read(user, attribute);
        if (grants.isEmpty()) {
            return;
        }
        try {
            RealmModel realm = userSession.getRealm();
            long now = Time.currentTimeMillis();
            Map<String, JitGrants.Target> ended = new HashMap<>();
            Set<String> running = new HashSet<>();
            for (JitGrants.Grant g : grants) {
                if (g.activeAt(now)) {
                    running.add(g.target().key());
                } else {
                    ended.put(g.target().key(), g.target());
                }
            }
            ended.keySet().removeAll(running);
            if (!ended.isEmpty()) {
                leaveOut(token, session, realm, user, ended.values());
            }

            Set<RoleModel> carriedRoles = ctx.getRolesStream().collect(Collectors.toSet());
            List<Map<String, Object>> claim = new ArrayList<>();
            Long earliest = null;
            for (JitGrants.Grant g : grants) {
                if (!g.activeAt(now) || !carries(token, session, realm, carriedRoles, g.target())) {
                    continue;
                }
                claim.add(g.toClaim());
                long endSeconds = Math.floorDiv(g.expiresAt().toEpochMilli(), 1000L);
                earliest = earliest == null ? endSeconds : Math.min(earliest, endSeconds);
            }
            if (bound && earliest != null) {
                Long exp = token.getExp();
                if (exp == null || exp == 0 || earliest < exp) {
                    token.exp(earliest);
                }
            }
            if (withClaim && !claim.isEmpty()) {
                String name = model.getConfig().getOrDefault(CONFIG_CLAIM, DEFAULT_CLAIM);
                token.getOtherClaims().put(name, claim);
            }
        } catch (RuntimeException e) {
            LOG.errorf(e, "JIT: could not apply the grant bounds for user %s; token left unbounded", user.getId());
        }
    }

    /** Whether this client session's token carries the target. */
    private static boolean carries(IDToken token, KeycloakSession session, RealmModel realm,
            Set<RoleModel> carriedRoles, JitGrants.Target t) {
        switch (t.kind()) {
            case "realm_role", "client_role" -> {
                RoleModel r = role(realm, t);
                return r != null && carriedRoles.contains(r);
            }
            case "group" -> {
                GroupModel g = KeycloakModelUtils.findGroupByPath(session, realm, t.path());
                if (g == null) {
                    return false;
                }
                if (claimMentions(token.getOtherClaims(), g)) {
                    return true;
                }
                Set<RoleModel> conferred = groupRoles(g);
                return conferred.stream().anyMatch(carriedRoles::contains);
            }
            default -> {
                return false;
            }
        }
    }

    /**
     * Removes from the token the roles and groups that only the ended grants gave: the
     * targets' roles (with composites) minus what the user holds another way.
     */
    private static void leaveOut(IDToken token, KeycloakSession session, RealmModel realm, UserModel user,
            Collection<JitGrants.Target> ended) {
        Set<RoleModel> endedRoles = new HashSet<>();
        Set<GroupModel> endedGroups = new HashSet<>();
        for (JitGrants.Target t : ended) {
            if ("group".equals(t.kind())) {
                GroupModel g = KeycloakModelUtils.findGroupByPath(session, realm, t.path());
                if (g != null) {
                    endedGroups.add(g);
                }
            } else {
                RoleModel r = role(realm, t);
                if (r != null) {
                    endedRoles.add(r);
                }
            }
        }
        Set<RoleModel> strip = new HashSet<>(RoleUtils.expandCompositeRoles(endedRoles));
        for (GroupModel g : endedGroups) {
            strip.addAll(groupRoles(g));
        }
        if (!strip.isEmpty()) {
            Set<RoleModel> keep = new HashSet<>();
            user.getRoleMappingsStream().filter(r -> !endedRoles.contains(r)).forEach(keep::add);
            user.getGroupsStream().filter(g -> !endedGroups.contains(g)).forEach(g -> keep.addAll(groupRoles(g)));
            strip.removeAll(RoleUtils.expandCompositeRoles(keep));
        }
        for (RoleModel r : strip) {
            if (r.getContainer() instanceof ClientModel c) {
                removeRole(token, c.getClientId(), r.getName());
            } else {
                removeRole(token, null, r.getName());
            }
        }
        for (GroupModel g : endedGroups) {
            String path = ModelToRepresentation.buildGroupPath(g);
            for (Object v : token.getOtherClaims().values()) {
                if (v instanceof Collection<?> list) {
                    list.remove(path);
                }
            }
            if (token.getOtherClaims().get("groups") instanceof Collection<?> groups) {
                groups.remove(g.getName());
            }
        }
    }

    /** Removes one realm role ({@code clientId == null}) or client role from every place a mapper puts roles. */
    @SuppressWarnings("unchecked")
    private static void removeRole(IDToken token, String clientId, String name) {
        if (token instanceof AccessToken at) {
            AccessToken.Access access = clientId == null ? at.getRealmAccess()
                    : at.getResourceAccess() == null ? null : at.getResourceAccess().get(clientId);
            if (access != null && access.getRoles() != null) {
                access.getRoles().remove(name);
            }
        }
        Object top = token.getOtherClaims().get(clientId == null ? "realm_access" : "resource_access");
        if (top instanceof Map<?, ?> m) {
            Object holder = clientId == null ? m : m.get(clientId);
            if (holder instanceof Map<?, ?> h && h.get("roles") instanceof Collection<?> roles) {
                ((Collection<Object>) roles).remove(name);
            }
        }
    }

    private static boolean claimMentions(Map<String, Object> claims, GroupModel g) {
        String path = ModelToRepresentation.buildGroupPath(g);
        for (Object v : claims.values()) {
            if (v instanceof Collection<?> list && list.contains(path)) {
                return true;
            }
        }
        return claims.get("groups") instanceof Collection<?> groups && groups.contains(g.getName());
    }

    /** The roles a group confers: its own and its parents' mappings, composites expanded. */
    private static Set<RoleModel> groupRoles(GroupModel g) {
        Set<RoleModel> roles = new HashSet<>();
        for (GroupModel at = g; at != null; at = at.getParentId() == null ? null : at.getParent()) {
            at.getRoleMappingsStream().forEach(roles::add);
        }
        return RoleUtils.expandCompositeRoles(roles);
    }

    static RoleModel role(RealmModel realm, JitGrants.Target t) {
        if ("realm_role".equals(t.kind())) {
            return realm.getRole(t.role());
        }
        ClientModel c = realm.getClientByClientId(t.client());
        return c == null ? null : c.getRole(t.role());
    }
}
