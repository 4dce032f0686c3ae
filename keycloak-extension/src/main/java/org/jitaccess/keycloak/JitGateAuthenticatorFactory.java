package org.jitaccess.keycloak;

import java.util.List;

import org.keycloak.Config;
import org.keycloak.authentication.Authenticator;
import org.keycloak.authentication.AuthenticatorFactory;
import org.keycloak.models.AuthenticationExecutionModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakSessionFactory;
import org.keycloak.provider.ProviderConfigProperty;

/**
 * Factory of the "JIT grant gate" authenticator ({@value #PROVIDER_ID}): add it as a
 * REQUIRED step after the user is identified in the browser flow. See
 * {@link JitGateAuthenticator}.
 */
public class JitGateAuthenticatorFactory implements AuthenticatorFactory {
    /** Provider id, used in realm JSON ({@code "authenticator": "jit-grant-gate"}). */
    public static final String PROVIDER_ID = "jit-grant-gate";
    private static final JitGateAuthenticator SINGLETON = new JitGateAuthenticator();
    private static final AuthenticationExecutionModel.Requirement[] CHOICES = {
        AuthenticationExecutionModel.Requirement.REQUIRED, AuthenticationExecutionModel.Requirement.DISABLED
    };

    @Override
    public String getId() {
        return PROVIDER_ID;
    }

    @Override
    public String getDisplayType() {
        return "JIT grant gate";
    }

    @Override
    public String getReferenceCategory() {
        return "jit";
    }

    @Override
    public String getHelpText() {
        return "Refuses a login to a client marked with the attribute " + JitGateAuthenticator.CLIENT_ATTRIBUTE
                + " (or to every client of this flow, with the config 'entitlement') unless the user holds a"
                + " running JIT grant of that entitlement; shows how to request it.";
    }

    @Override
    public boolean isConfigurable() {
        return true;
    }

    @Override
    public AuthenticationExecutionModel.Requirement[] getRequirementChoices() {
        return CHOICES;
    }

    @Override
    public boolean isUserSetupAllowed() {
        return false;
    }

    @Override
    public List<ProviderConfigProperty> getConfigProperties() {
        ProviderConfigProperty ent = new ProviderConfigProperty();
        ent.setName(JitGateAuthenticator.CONFIG_ENTITLEMENT);
        ent.setLabel("Entitlement");
        ent.setType(ProviderConfigProperty.STRING_TYPE);
        ent.setHelpText("Entitlement id required by every client of this flow that has no "
                + JitGateAuthenticator.CLIENT_ATTRIBUTE + " attribute (empty: only marked clients are gated).");
        ProviderConfigProperty attr = new ProviderConfigProperty();
        attr.setName(JitGateAuthenticator.CONFIG_ATTRIBUTE);
        attr.setLabel("Grants attribute");
        attr.setType(ProviderConfigProperty.STRING_TYPE);
        attr.setDefaultValue(JitGrants.DEFAULT_ATTRIBUTE);
        attr.setHelpText("User attribute jitd writes the grants to.");
        return List.of(ent, attr);
    }

    @Override
    public Authenticator create(KeycloakSession session) {
        return SINGLETON;
    }

    @Override
    public void init(Config.Scope config) {}

    @Override
    public void postInit(KeycloakSessionFactory factory) {}

    @Override
    public void close() {}
}
