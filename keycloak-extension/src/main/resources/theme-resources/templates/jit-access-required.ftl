<#-- JIT grant gate: shown instead of the application when the user holds no running
     JIT grant of the entitlement the client requires. Rendered in the realm's login
     theme (template.ftl of keycloak.v2, keycloak or base). -->
<#import "template.ftl" as layout>
<@layout.registrationLayout displayMessage=false; section>
    <#if section = "header">
        ${msg("jitAccessRequiredTitle")}
    <#elseif section = "form">
        <div id="jit-access-required">
            <p class="instruction" id="jit-needed">${msg("jitAccessRequiredNeeded", jitClient, jitEntitlement)}</p>
            <p class="instruction">${msg("jitAccessRequiredHowCli")}</p>
            <pre id="jit-command">${jitCommand}</pre>
            <p class="instruction">${msg("jitAccessRequiredHowApp")}
                <a id="jit-request-link" href="${jitLink}">${jitLink}</a></p>
            <p class="instruction">${msg("jitAccessRequiredAfter")}</p>
            <form id="jit-retry" class="${properties.kcFormClass!}" action="${url.loginAction}" method="post">
                <button id="jit-try-again" name="retry" type="submit"
                        class="${properties.kcButtonClass!} ${properties.kcButtonPrimaryClass!} ${properties.kcButtonBlockClass!}">${msg("jitAccessRequiredRetry")}</button>
            </form>
        </div>
    </#if>
</@layout.registrationLayout>
